using Grpc.Core;
using Microsoft.Extensions.Options;
using Platform.AgentMonitor.Probes;
using Platform.Monitor.V1;
using Platform.ServiceDefaults;

namespace Platform.AgentMonitor;

/// <summary>The AgentMonitor's gRPC surface (platform.monitor.v1).</summary>
public sealed class AgentMonitorService(MonitorEngine engine, TmuxServers tmux, IOptions<MonitorOptions> options, WatcherLimit watchers) : Monitor.V1.AgentMonitor.AgentMonitorBase
{
    private const int MaxPageSize = 1000;
    private const int DefaultPageSize = 100;

    public override async Task<Target> AddTarget(AddTargetRequest request, ServerCallContext context)
    {
        var v = new Violations();
        var spec = TargetValidation.Validate(request.Target, options.Value, v);
        if (request.Target is { } t && t.Id.StartsWith(RegistryDiscovery.IdPrefix, StringComparison.Ordinal))
            v.Add("target.id", $"the prefix '{RegistryDiscovery.IdPrefix}' is kept for targets discovered from registry sessions");
        v.ThrowIfAny();
        if (spec!.Target.ProbeCase == Target.ProbeOneofCase.TmuxPane) await CheckTmuxPaneAsync(spec, context.CancellationToken);
        return engine.Upsert(spec);
    }

    /// <summary>A tmux target must name a live server and an existing pane when it is added.</summary>
    private async Task CheckTmuxPaneAsync(TargetSpec spec, CancellationToken cancellationToken)
    {
        var probe = spec.Target.TmuxPane;
        var server = probe.SocketPath.Length > 0 ? $"at {probe.SocketPath}" : "(default socket)";
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        // Once per AddTarget, and the first call may start the server's control connection: at least 5 s.
        var limit = TimeSpan.FromSeconds(Math.Max(5, spec.Timeout.TotalSeconds));
        timeout.CancelAfter(limit);
        try
        {
            var connection = await tmux.GetAsync(probe.SocketPath, timeout.Token, retryNow: true);
            if (await connection.ResolvePaneAsync(probe.Target, timeout.Token) is null)
                throw PlatformException.Conflict($"the tmux server {server} has no pane '{probe.Target}'");
        }
        catch (TmuxException e) when (e.ServerMissing)
        {
            throw PlatformException.Conflict($"no tmux server is running {server}: {e.Message}");
        }
        catch (TmuxException e)
        {
            throw PlatformException.Conflict($"tmux {server} cannot find pane '{probe.Target}': {e.Message}");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw PlatformException.TimedOut($"tmux {server} did not answer within {limit.TotalSeconds:0.###}s");
        }
    }

    public override Task<RemoveTargetResponse> RemoveTarget(RemoveTargetRequest request, ServerCallContext context)
    {
        if (request.TargetId.Length == 0) throw PlatformException.Invalid("target_id", "is required");
        if (!engine.Remove(request.TargetId)) throw PlatformException.NotFound("target", request.TargetId);
        return Task.FromResult(new RemoveTargetResponse());
    }

    public override Task<ListTargetsResponse> ListTargets(ListTargetsRequest request, ServerCallContext context)
    {
        var (after, size) = Page(request.PageSize, request.PageToken, request.Workload);
        var page = engine.ListTargets(t => request.Workload.Length == 0 || t.Workload == request.Workload, after, size + 1);
        var more = page.Count > size;
        if (more) page.RemoveAt(size);
        return Task.FromResult(new ListTargetsResponse
        {
            Targets = { page },
            NextPageToken = more ? PageToken.Write(page[^1].Id, request.Workload) : "",
        });
    }

    public override Task<AgentStatus> GetStatus(GetStatusRequest request, ServerCallContext context)
    {
        if (request.TargetId.Length == 0) throw PlatformException.Invalid("target_id", "is required");
        return Task.FromResult(engine.GetStatus(request.TargetId) ?? throw PlatformException.NotFound("target", request.TargetId));
    }

    public override Task<ListStatusesResponse> ListStatuses(ListStatusesRequest request, ServerCallContext context)
    {
        if (!System.Enum.IsDefined(request.State)) throw PlatformException.Invalid("state", $"{(int)request.State} is not a status state");
        var filters = $"{request.Workload}\n{(int)request.State}";
        var (after, size) = Page(request.PageSize, request.PageToken, filters);
        var page = engine.ListStatuses(s => (request.Workload.Length == 0 || s.Workload == request.Workload) &&
            (request.State == AgentStatus.Types.State.Unspecified || s.State == request.State), after, size + 1);
        var more = page.Count > size;
        if (more) page.RemoveAt(size);
        return Task.FromResult(new ListStatusesResponse
        {
            Statuses = { page },
            NextPageToken = more ? PageToken.Write(page[^1].TargetId, filters) : "",
        });
    }

    private static (string After, int Size) Page(int pageSize, string token, string filters)
    {
        var v = new Violations();
        if (pageSize is < 0 or > MaxPageSize) v.Add("page_size", $"must be between 0 and {MaxPageSize}");
        var after = "";
        if (token.Length > 0 && !PageToken.TryRead(token, filters, out after, out var error)) v.Add("page_token", error!);
        v.ThrowIfAny();
        return (after, pageSize == 0 ? DefaultPageSize : pageSize);
    }

    public override async Task WatchStatuses(WatchStatusesRequest request, IServerStreamWriter<AgentStatus> responseStream, ServerCallContext context)
    {
        using var place = watchers.Enter(options.Value.MaxWatchers, "Monitor:MaxWatchers");
        var statuses = engine.Watch(request.TargetId, request.Workload, request.IncludeCurrent, out var subscription);
        using (subscription)
        {
            await context.WriteResponseHeadersAsync([]);
            await foreach (var status in statuses.ReadAllAsync(context.CancellationToken))
                await responseStream.WriteAsync(status, context.CancellationToken);
        }
    }
}
