namespace Platform.AgentMonitor.Probes;

/// <summary>
/// A tmux pane over its server's control-mode connection: the pane must exist and not be dead; its %output is
/// activity (seen as it happens); with patterns, the pane's visible content is captured over the same connection.
/// </summary>
internal sealed class TmuxPaneProbe(ProbeContext context, TmuxServers servers, int patternLines) : IBlockingProbe
{
    private static readonly TimeSpan PaneListMaxAge = TimeSpan.FromMilliseconds(200);
    private string? _paneId;
    private TmuxConnection? _paneConnection; // pane ids are per server: a new server (connection) means resolve again
    private string? _watchedPane;
    private DateTimeOffset _watchedSince;

    public async Task<ProbeResult> RunAsync(CancellationToken cancellationToken)
    {
        var probe = context.Spec.Target.TmuxPane;
        var server = probe.SocketPath.Length > 0 ? probe.SocketPath : "the default tmux server";
        TmuxConnection tmux;
        try
        {
            tmux = await servers.GetAsync(probe.SocketPath, cancellationToken);
        }
        catch (TmuxException e)
        {
            return e.ServerMissing ? ProbeResult.Failed($"no tmux server at {server}: {e.Message}") : ProbeResult.Unknown(e.Message);
        }

        PaneInfo? pane;
        try
        {
            // The target is resolved once (strictly); later probes look the pane up by id in the server's shared
            // pane list. A pane that is gone is resolved afresh next time (the target may name a new pane).
            if (_paneConnection != tmux) _paneId = null;
            _paneConnection = tmux;
            if (_paneId is null) pane = await tmux.ResolvePaneAsync(probe.Target, cancellationToken);
            else
            {
                var panes = await tmux.PanesAsync(PaneListMaxAge, cancellationToken);
                pane = panes.GetValueOrDefault(_paneId);
            }
        }
        catch (TmuxException e)
        {
            return ProbeResult.Failed(e.ServerMissing ? $"tmux server at {server} is gone" : $"pane {probe.Target}: {e.Message}");
        }
        if (pane is null)
        {
            _paneId = null;
            return ProbeResult.Failed($"tmux has no pane {probe.Target}");
        }
        var now = context.Time.GetUtcNow();
        _paneId = pane.PaneId;
        if (_watchedPane != pane.PaneId)
        {
            _watchedPane = pane.PaneId;
            _watchedSince = now;
        }
        if (pane.Dead) return ProbeResult.Failed($"pane {probe.Target} is dead (its program exited)");
        try
        {
            await tmux.EnsureLinkedAsync(pane.WindowId, cancellationToken);
        }
        catch (TmuxException e)
        {
            return ProbeResult.Unknown($"cannot watch pane {probe.Target}: {e.Message}");
        }

        var lastOutput = tmux.LastOutput(_paneId);
        var lastActivity = lastOutput > 0 ? new DateTimeOffset(lastOutput, TimeSpan.Zero) : _watchedSince;
        if (lastActivity < _watchedSince) lastActivity = _watchedSince;
        List<string> lines = [];
        if (context.Spec.UnhealthyPatterns.Length + context.Spec.IdlePatterns.Length > 0)
        {
            try
            {
                lines = Patterns.LastLines(string.Join('\n', await tmux.CommandAsync($"capture-pane -p -J -t '{_paneId}'", cancellationToken)), patternLines);
            }
            catch (TmuxException e)
            {
                _paneId = null;
                return ProbeResult.Failed($"pane {probe.Target}: {e.Message}");
            }
        }
        var result = Patterns.Classify(context.Spec, lines, lastActivity,
            $"pane {probe.Target} ({_paneId}) running {pane.Command}");
        // A quiet pane that prints again is seen at once, not at the next interval.
        if (result.Outcome == ProbeOutcome.Alive && now - lastActivity >= context.Spec.IdleAfter)
        {
            tmux.NotifyOnNextOutput(_paneId, context.ProbeNow);
            if (tmux.LastOutput(_paneId) != lastOutput) context.ProbeNow(); // output slipped in before the callback was set
        }
        return result;
    }

    public void Dispose() { }
}
