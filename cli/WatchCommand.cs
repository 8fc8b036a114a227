using System.Globalization;
using System.Threading.Channels;
using Grpc.Core;
using Platform.Monitor.V1;
using Platform.Supervisor.V1;

namespace Platform.Cli;

/// <summary>
/// watch: workloads and the monitor's verdicts as they change, until Ctrl+C. On a terminal, one table redrawn in place
/// (at most five times a second); in a pipe, one line per change.
/// </summary>
public static class WatchCommand
{
    public static async Task<int> RunAsync(Context c)
    {
        var workloads = new SortedDictionary<string, Workload>(StringComparer.Ordinal);
        var verdicts = new Dictionary<string, Dictionary<string, AgentStatus>>(StringComparer.Ordinal);
        var changes = Channel.CreateUnbounded<object>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(c.Cancellation);

        // Watch first, then list (the contract's way to miss nothing): per workload the newer revision wins.
        var workloadStream = c.Platform.Supervisor.WatchWorkloads(new WatchWorkloadsRequest(), cancellationToken: stop.Token);
        var pumpWorkloads = PumpAsync(workloadStream.ResponseStream, changes.Writer, "supervisor", stop.Token);
        await c.Ask("supervisor", () => workloadStream.ResponseHeadersAsync);
        var token = "";
        do
        {
            var page = await c.Ask("supervisor", () => c.Platform.Supervisor.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000, PageToken = token }, deadline: c.Deadline).ResponseAsync);
            foreach (var w in page.Workloads) await changes.Writer.WriteAsync(w, stop.Token);
            token = page.NextPageToken;
        } while (token.Length > 0);
        // The verdicts are extra: without the monitor the workloads are still watched.
        var statusStream = c.Platform.Monitor.WatchStatuses(new WatchStatusesRequest { IncludeCurrent = true }, cancellationToken: stop.Token);
        var pumpStatuses = PumpAsync(statusStream.ResponseStream, changes.Writer, "monitor", stop.Token);

        var terminal = c.Out.Colour;
        var lastDraw = DateTime.MinValue;
        var pending = false;
        try
        {
            while (true)
            {
                object change;
                if (terminal && pending)
                {
                    var wait = lastDraw + TimeSpan.FromMilliseconds(200) - DateTime.UtcNow;
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
                    timeout.CancelAfter(wait > TimeSpan.Zero ? wait : TimeSpan.Zero);
                    try { change = await changes.Reader.ReadAsync(timeout.Token); }
                    catch (OperationCanceledException) when (!stop.IsCancellationRequested)
                    {
                        Draw(c, workloads, verdicts);
                        lastDraw = DateTime.UtcNow;
                        pending = false;
                        continue;
                    }
                }
                else change = await changes.Reader.ReadAsync(stop.Token);

                switch (change)
                {
                    case Workload w:
                        if (w.Status is { Phase: WorkloadStatus.Types.Phase.Stopped, Message: "deleted" })
                        {
                            // Published with the revision of its last stored change (a deletion stores nothing more).
                            if (workloads.Remove(w.Name) && !terminal) c.Out.Writer.WriteLine($"{DateTime.UtcNow:HH:mm:ss} workload/{w.Name} deleted");
                            break;
                        }
                        if (workloads.TryGetValue(w.Name, out var known) && known.Revision >= w.Revision) continue;
                        workloads[w.Name] = w;
                        if (!terminal) Line(c, w, verdicts.GetValueOrDefault(w.Name));
                        break;
                    case AgentStatus s:
                        if (!verdicts.TryGetValue(s.Workload, out var ofWorkload)) verdicts[s.Workload] = ofWorkload = new(StringComparer.Ordinal);
                        var before = ofWorkload.GetValueOrDefault(s.TargetId)?.State;
                        ofWorkload[s.TargetId] = s;
                        if (!terminal && before != s.State)
                            c.Out.Writer.WriteLine($"{DateTime.UtcNow:HH:mm:ss} target/{s.TargetId} {Output.Name(Enums.Verdict, (int)s.State)} {s.Detail}".TrimEnd());
                        break;
                    case Failure f:
                        if (f.Service == "supervisor") throw new CliException(f.Code, f.Message);
                        if (!terminal) Console.Error.WriteLine($"platformctl: verdicts unavailable: {f.Message}");
                        break;
                }
                if (!terminal) await c.Out.Writer.FlushAsync(stop.Token);
                pending = true;
            }
        }
        catch (OperationCanceledException) when (c.Cancellation.IsCancellationRequested)
        {
            return ExitCode.Ok; // Ctrl+C
        }
        finally
        {
            await stop.CancelAsync();
            workloadStream.Dispose();
            statusStream.Dispose();
            await Task.WhenAll(pumpWorkloads, pumpStatuses);
        }
    }

    private sealed record Failure(string Service, int Code, string Message);

    private static async Task PumpAsync<T>(IAsyncStreamReader<T> stream, ChannelWriter<object> changes, string service, CancellationToken token)
    {
        try
        {
            await foreach (var item in stream.ReadAllAsync(token))
                await changes.WriteAsync(item is WorkloadEvent e ? e.Workload : item!, token);
            await changes.WriteAsync(new Failure(service, ExitCode.Unreachable, $"the {service} ended the watch (restarting?)"), token);
        }
        catch (RpcException e) when (!token.IsCancellationRequested)
        {
            var (code, message) = Failures.Describe(e, service, null);
            await changes.WriteAsync(new Failure(service, code, message), CancellationToken.None);
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException && token.IsCancellationRequested)
        {
        }
    }

    private static void Line(Context c, Workload w, Dictionary<string, AgentStatus>? verdicts)
    {
        var s = w.Status ?? new WorkloadStatus();
        c.Out.Writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{DateTime.UtcNow:HH:mm:ss} workload/{w.Name} {Output.Name(Enums.Phase, (int)s.Phase)} generation {s.Generation} pid {s.Pid} restarts {s.TotalRestarts}{(verdicts is null ? "" : " " + Verdict(verdicts).Text)}"));
    }

    private static Cell Verdict(Dictionary<string, AgentStatus>? verdicts)
    {
        if (verdicts is null || verdicts.Count == 0) return "-";
        // The worst of the workload's targets speaks for it.
        var worst = verdicts.Values.MaxBy(v => v.State switch
        {
            AgentStatus.Types.State.Unhealthy => 3,
            AgentStatus.Types.State.Idle => 2,
            AgentStatus.Types.State.Unknown => 1,
            _ => 0,
        })!;
        return Verdicts.Cell(worst.State);
    }

    private static void Draw(Context c, SortedDictionary<string, Workload> workloads, Dictionary<string, Dictionary<string, AgentStatus>> verdicts)
    {
        var now = DateTimeOffset.UtcNow;
        var text = new StringWriter(CultureInfo.InvariantCulture);
        var table = new Output(text, c.Out.Colour);
        table.Table(["NAME", "PHASE", "GEN", "RESTARTS", "PID", "AGENT", "NEXT START", "MESSAGE"], workloads.Values.Select(w =>
        {
            var s = w.Status ?? new WorkloadStatus();
            return (IReadOnlyList<Cell>)[w.Name, Phases.Cell(s.Phase), s.Generation.ToString(CultureInfo.InvariantCulture), s.TotalRestarts.ToString(CultureInfo.InvariantCulture),
                s.Pid == 0 ? "-" : s.Pid.ToString(CultureInfo.InvariantCulture), Verdict(verdicts.GetValueOrDefault(w.Name)), Output.In(s.NextRestartTime, now), s.Message];
        }));
        // Home, the table, clear what is left of the previous one.
        c.Out.Writer.Write($"\u001b[H\u001b[2J{now:HH:mm:ss}  {workloads.Count} workloads  (Ctrl+C to stop)\n\n{text}");
        c.Out.Writer.Flush();
    }
}
