using Grpc.Core;
using Platform.Launcher.V1;
using Platform.Monitor.V1;
using Platform.Registry.V1;
using Platform.Supervisor.V1;

namespace Platform.Testing.Chaos;

/// <summary>
/// A client that keeps one watch open on a service through its restarts, as a real client would: on a broken stream
/// it reconnects and resumes the way the contract says (the registry from its last revision; the others by watching
/// again and then listing, newer of the two wins), and records every gap and every duplicate it sees.
/// </summary>
public abstract class ResumingWatcher : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly List<string> _faults = [];
    private Task _loop = Task.CompletedTask;

    public abstract string Name { get; }

    /// <summary>Streams opened (the first one included).</summary>
    public int Connections { get; private set; }

    public long Events { get; private set; }

    /// <summary>Events of the stream open now (or last).</summary>
    public long CurrentStream { get; private set; }

    /// <summary>Gaps and duplicates seen, each in words.</summary>
    public IReadOnlyList<string> Faults { get { lock (_faults) return [.. _faults]; } }

    protected void Fault(string what)
    {
        lock (_faults) _faults.Add(what);
    }

    protected void Received()
    {
        Events++;
        CurrentStream++;
    }

    public void Start() => _loop = Task.Run(LoopAsync);

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                Connections++;
                CurrentStream = 0;
                await WatchAsync(_stop.Token);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is RpcException { StatusCode: StatusCode.Unavailable or StatusCode.Cancelled or StatusCode.Internal or StatusCode.Unknown or StatusCode.DeadlineExceeded }
                or IOException)
            {
                // The service went away mid-stream (SIGKILL: a reset stream or a refused connection): reconnect.
            }
            catch (RpcException e)
            {
                Fault($"{Name}: the watch failed with {e.StatusCode}: {e.Status.Detail}");
            }
            try { await Task.Delay(100, _stop.Token); }
            catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>One stream, from its opening to its end.</summary>
    protected abstract Task WatchAsync(CancellationToken cancel);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
    }
}

/// <summary>WatchSessions resumed from the last revision seen: every revision exactly once, in order.</summary>
public sealed class SessionWatcher(SessionRegistry.SessionRegistryClient client, long fromRevision) : ResumingWatcher
{
    public override string Name => "registry WatchSessions";

    public long LastRevision { get; private set; } = fromRevision;

    private readonly TaskCompletionSource _subscribed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Done once the first stream is subscribed (its response headers came): changes from then on reach it.</summary>
    public Task Subscribed => _subscribed.Task;

    protected override async Task WatchAsync(CancellationToken cancel)
    {
        using var call = client.WatchSessions(new WatchSessionsRequest { FromRevision = LastRevision }, cancellationToken: cancel);
        await call.ResponseHeadersAsync;
        _subscribed.TrySetResult();
        await foreach (var e in call.ResponseStream.ReadAllAsync(cancel))
        {
            Received();
            // From revision 0 is "from now" in the contract: the first event of such a stream has no predecessor to
            // check it against.
            if (LastRevision == 0) LastRevision = e.Revision - 1;
            if (e.Revision != LastRevision + 1)
                Fault(e.Revision <= LastRevision
                    ? $"{Name}: revision {e.Revision} again after {LastRevision} (a duplicate)"
                    : $"{Name}: revision {e.Revision} after {LastRevision} (a gap of {e.Revision - LastRevision - 1})");
            LastRevision = Math.Max(LastRevision, e.Revision);
        }
    }
}

/// <summary>
/// WatchWorkloads, watched again and re-listed after each break: within a stream a workload's revision only grows;
/// <see cref="Known"/> is what the watcher believes each workload's revision is.
/// </summary>
public sealed class WorkloadWatcher(Supervisor.V1.Supervisor.SupervisorClient client) : ResumingWatcher
{
    private readonly Dictionary<string, long> _known = [];

    public override string Name => "supervisor WatchWorkloads";

    public Dictionary<string, long> Known { get { lock (_known) return new(_known); } }

    protected override async Task WatchAsync(CancellationToken cancel)
    {
        using var call = client.WatchWorkloads(new WatchWorkloadsRequest(), cancellationToken: cancel);
        await call.ResponseHeadersAsync; // subscribed: the list below misses nothing the stream will not bring
        var listed = await client.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000 }, cancellationToken: cancel);
        lock (_known)
        {
            foreach (var w in listed.Workloads) _known[w.Name] = Math.Max(_known.GetValueOrDefault(w.Name), w.Revision);
        }
        var inStream = new Dictionary<string, long>();
        await foreach (var e in call.ResponseStream.ReadAllAsync(cancel))
        {
            Received();
            var name = e.Workload.Name;
            if (inStream.TryGetValue(name, out var previous) && e.Workload.Revision <= previous)
                Fault($"{Name}: {name} at revision {e.Workload.Revision} after {previous} in one stream (a duplicate)");
            inStream[name] = e.Workload.Revision;
            lock (_known) _known[name] = Math.Max(_known.GetValueOrDefault(name), e.Workload.Revision);
        }
    }
}

/// <summary>
/// WatchInstanceEvents, watched again and re-listed after each break: no instance starts or exits twice in a stream;
/// <see cref="Running"/> is the set of instances the watcher believes are running.
/// </summary>
public sealed class InstanceWatcher(Launcher.V1.Launcher.LauncherClient client) : ResumingWatcher
{
    private readonly HashSet<string> _running = [];

    public override string Name => "launcher WatchInstanceEvents";

    public HashSet<string> Running { get { lock (_running) return [.. _running]; } }

    protected override async Task WatchAsync(CancellationToken cancel)
    {
        using var call = client.WatchInstanceEvents(new WatchInstanceEventsRequest(), cancellationToken: cancel);
        await call.ResponseHeadersAsync;
        var running = await RunningAsync(client, cancel);
        var started = new HashSet<string>();
        var exited = new HashSet<string>();
        lock (_running)
        {
            _running.Clear();
            _running.UnionWith(running);
        }
        await foreach (var e in call.ResponseStream.ReadAllAsync(cancel))
        {
            Received();
            var id = e.Instance.Id;
            lock (_running)
            {
                switch (e.Type)
                {
                    case InstanceEvent.Types.Type.Started or InstanceEvent.Types.Type.Adopted:
                        if (!started.Add(id)) Fault($"{Name}: {id} {e.Type} twice in one stream");
                        if (!exited.Contains(id)) _running.Add(id);
                        break;
                    case InstanceEvent.Types.Type.Exited:
                        if (!exited.Add(id)) Fault($"{Name}: {id} EXITED twice in one stream");
                        _running.Remove(id);
                        break;
                }
            }
        }
    }

    /// <summary>The ids of the launcher's instances that are starting, running or stopping.</summary>
    public static async Task<HashSet<string>> RunningAsync(Launcher.V1.Launcher.LauncherClient client, CancellationToken cancel = default)
    {
        var running = new HashSet<string>();
        var token = "";
        do
        {
            var page = await client.ListInstancesAsync(new ListInstancesRequest { PageSize = 1000, PageToken = token }, cancellationToken: cancel);
            running.UnionWith(page.Instances.Where(i => i.State != Instance.Types.State.Exited).Select(i => i.Id));
            token = page.NextPageToken;
        }
        while (token.Length > 0);
        return running;
    }
}

/// <summary>WatchStatuses with the current statuses first at each connection: the verdicts it believes per target.</summary>
public sealed class StatusWatcher(AgentMonitor.AgentMonitorClient client) : ResumingWatcher
{
    public override string Name => "monitor WatchStatuses";

    protected override async Task WatchAsync(CancellationToken cancel)
    {
        using var call = client.WatchStatuses(new WatchStatusesRequest { IncludeCurrent = true }, cancellationToken: cancel);
        await foreach (var _ in call.ResponseStream.ReadAllAsync(cancel)) Received();
    }
}
