using System.Collections.Concurrent;
using System.Threading.Channels;
using Grpc.Core;
using Microsoft.Extensions.Options;
using Platform.ServiceDefaults;
using Platform.Launcher.V1;
using Platform.Monitor.V1;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor;

/// <summary>
/// Holds the workloads (one <see cref="WorkloadActor"/> each) and feeds them what happens elsewhere: the Launcher's
/// instance events (exits, at once) and the Monitor's status transitions (UNHEALTHY verdicts). After a start, and after
/// every reconnect to the Launcher, each workload is reconciled against the Launcher's running instances before it may
/// start anything: running instances are adopted, strays stopped, exits missed meanwhile handled.
/// </summary>
public sealed class SupervisorEngine(
    WorkloadStore store,
    ActingLock acting,
    Dependencies deps,
    IOptions<SupervisorOptions> options,
    TimeProvider time,
    IServiceProvider services,
    ILoggerFactory loggers) : BackgroundService
{
    private readonly Dictionary<string, (NodeClient Node, CancellationTokenSource Stop, Task Pump)> _pumps = new(StringComparer.Ordinal);
    private readonly Lock _pumpLock = new();
    private readonly ConcurrentDictionary<string, WorkloadActor> _actors = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _creating = new(StringComparer.Ordinal);
    private readonly ILogger _logger = loggers.CreateLogger<SupervisorEngine>();
    private readonly List<(Channel<WorkloadEvent> Channel, string Name)> _watchers = [];
    private readonly Lock _watchLock = new();

    public int Count => _actors.Count;

    private int _reconciledOnce; // the first reconcile after start is logged, with its duration

    private volatile bool _acting;

    /// <summary>This Supervisor holds the store's <see cref="ActingLock"/> and has loaded its workloads.</summary>
    public bool Acting => _acting;

    /// <summary>Every API call first: a standby changes nothing and answers UNAVAILABLE.</summary>
    public void EnsureActing()
    {
        if (!_acting)
            throw PlatformException.Unavailable($"this Supervisor stands by: another one acts on the same store ({acting.Path}); it takes over when that one stops");
    }

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        if (acting.TryAcquire()) Load();
        else _logger.LogWarning("Another Supervisor acts on this store ({Lock}): standing by, changing nothing, until it stops", acting.Path);
        return base.StartAsync(cancellationToken);
    }

    private void Load()
    {
        foreach (var record in store.LoadAll()) AddActor(record, reconciled: false);
        _logger.LogInformation("Loaded {Count} workloads; they start nothing until reconciled with the launcher", _actors.Count);
        _acting = true;
    }

    /// <summary>A standby takes the lock once the acting Supervisor's process has ended (looked at twice a second).</summary>
    private async Task ActAsync(CancellationToken stoppingToken)
    {
        while (!_acting)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), time, stoppingToken);
            if (!acting.TryAcquire()) continue;
            _logger.LogWarning("The acting Supervisor has stopped: this one acts now");
            Load();
        }
    }

    private WorkloadActor AddActor(WorkloadRecord record, bool reconciled)
    {
        deps.Nodes.Assign(record.Workload.Name, record.Workload.Status.Node);
        var actor = new WorkloadActor(record, reconciled, deps, store, options.Value, time, loggers.CreateLogger("Platform.Supervisor.Workload"), Publish);
        _actors[record.Workload.Name] = actor;
        actor.Start();
        return actor;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await ActAsync(stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            return;
        }
        var launchers = deps.Nodes.Static ? PumpNodeAsync(deps.Nodes.All[0], stoppingToken) : FollowNodesAsync(stoppingToken);
        await Task.WhenAll(launchers, PumpMonitorAsync(stoppingToken), ResyncQuietAsync(stoppingToken));
        Task[] pumps;
        lock (_pumpLock) pumps = [.. _pumps.Values.Select(p => p.Pump)];
        await Task.WhenAll(pumps);
        foreach (var (node, stop, _) in _pumps.Values)
        {
            stop.Dispose();
            node.Channel?.Dispose();
        }
    }

    /// <summary>Every QuietResyncInterval, one look at every workload: the safety net of quiet workloads, which keep no
    /// timer of their own (<see cref="WorkloadCore.NextWake"/>). One schedule for all of them.</summary>
    private async Task ResyncQuietAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.QuietResyncInterval, time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
                foreach (var actor in _actors.Values) await actor.Look();
        }
        catch (OperationCanceledException)
        {
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        await Task.WhenAll(_actors.Values.Select(a => a.StopAsync()));
        lock (_watchLock)
            foreach (var (channel, _) in _watchers) channel.Writer.TryComplete();
    }

    // ------------------------------------------------------------------ API

    public async Task<Workload> ApplyAsync(Workload spec)
    {
        if (_actors.TryGetValue(spec.Name, out var existing)) return await existing.ApplyAsync(spec);
        // One creation at a time per name, not for all names: applies of many new workloads launch in parallel. The
        // gate goes once the workload exists (later applies find its actor); after a refused first start it stays, so
        // that a waiting apply and a new one never both create the name.
        var gate = _creating.GetOrAdd(spec.Name, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync();
        try
        {
            if (_actors.TryGetValue(spec.Name, out existing)) return await existing.ApplyAsync(spec);
            var record = WorkloadActor.Create(spec, time.GetUtcNow(), store.NextRevision());
            store.Put(record);
            var actor = AddActor(record, reconciled: true);
            try
            {
                return await actor.FirstStartAsync();
            }
            catch (PlatformException e) when (e.Kind is ErrorKind.NotFound or ErrorKind.Invalid or ErrorKind.PermissionDenied or ErrorKind.Conflict)
            {
                // The Launcher refused the launch spec: nothing of the workload is kept.
                _actors.TryRemove(spec.Name, out _);
                await actor.StopAsync();
                store.Delete(spec.Name);
                throw PlatformException.Like(e.StatusCode, $"workload '{spec.Name}' was not created: the launcher refused its launch spec: {e.Message}");
            }
        }
        finally
        {
            if (_actors.ContainsKey(spec.Name)) _creating.TryRemove(KeyValuePair.Create(spec.Name, gate));
            gate.Release();
        }
    }

    public Workload? Get(string name) => _actors.TryGetValue(name, out var actor) ? actor.Snapshot : null;

    public List<Workload> List(string after, int limit) =>
        [.. _actors.Values.Select(a => a.Snapshot).Where(w => string.CompareOrdinal(w.Name, after) > 0).OrderBy(w => w.Name, StringComparer.Ordinal).Take(limit)];

    public async Task<bool> DeleteAsync(string name)
    {
        if (!_actors.TryGetValue(name, out var actor)) return false;
        await actor.DeleteAsync();
        _actors.TryRemove(name, out _);
        return true;
    }

    public Task<Workload>? RestartAsync(string name, string reason) =>
        _actors.TryGetValue(name, out var actor) ? actor.RestartAsync(actor.Snapshot.Status.Generation, reason, time.GetUtcNow()) : null;

    public ChannelReader<WorkloadEvent> Watch(string name, out IDisposable subscription)
    {
        var channel = Channel.CreateBounded<WorkloadEvent>(new BoundedChannelOptions(4096) { SingleReader = true });
        var entry = (channel, name);
        lock (_watchLock) _watchers.Add(entry);
        subscription = new Unsubscribe(() =>
        {
            lock (_watchLock) _watchers.Remove(entry);
            channel.Writer.TryComplete();
        });
        return channel.Reader;
    }

    private sealed class Unsubscribe(Action action) : IDisposable
    {
        public void Dispose() => action();
    }

    private void Publish(Workload workload, Phase previous, DateTimeOffset decidedAt)
    {
        var e = new WorkloadEvent { Workload = workload, PreviousPhase = previous, Time = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(decidedAt) };
        lock (_watchLock)
        {
            foreach (var (channel, name) in _watchers)
            {
                if (name.Length > 0 && name != workload.Name) continue;
                if (!channel.Writer.TryWrite(e))
                    channel.Writer.TryComplete(PlatformException.Exhausted("this watcher fell more than 4096 events behind; watch again"));
            }
        }
    }

    // ------------------------------------------------------------------ event pumps

    /// <summary>Subscribes to a launcher's events, then lists its running instances and reconciles the workloads;
    /// from then on an EXITED event reaches its workload at once. Starts over after any break. Static: every workload
    /// is reconciled against the one launcher. Nodes: the workloads placed there or with instances there; a node is
    /// given new placements only once that is done, so a node back from a loss is fenced (its instances of older
    /// generations stopped) before anything else is started there.</summary>
    private Task PumpNodeAsync(NodeClient node, CancellationToken stoppingToken) => FollowAsync(
        deps.Nodes.Static ? "Launcher events" : $"Launcher events of node {node.Name}", connected => node.EventsConnected = connected,
        "running workloads are left alone until it is back", async connected =>
        {
            using var events = node.Client.WatchInstanceEvents(new WatchInstanceEventsRequest(), cancellationToken: stoppingToken);
            await events.ResponseHeadersAsync;
            var listedAt = time.GetTimestamp();
            var running = new List<Instance>();
            var token = "";
            do
            {
                var page = await node.Client.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000, PageToken = token },
                    deadline: DateTime.UtcNow.AddSeconds(30), cancellationToken: stoppingToken);
                running.AddRange(page.Instances);
                token = page.NextPageToken;
            } while (token.Length > 0);
            var byWorkload = running.Where(i => i.Labels.ContainsKey(WorkloadLabels.Workload)).ToLookup(i => i.Labels[WorkloadLabels.Workload]);
            if (deps.Nodes.Static) await Task.WhenAll(_actors.Values.Select(a => a.Reconcile([.. byWorkload[a.Name]])));
            else await Task.WhenAll(_actors.Values.Where(a => a.Node == node.Name || byWorkload.Contains(a.Name)).Select(a => a.Reconcile([.. byWorkload[a.Name]], node.Name)));
            connected();
            var reconciled = ReconciledWhenDoneAsync(listedAt, deps.Nodes.Static ? "the launcher" : $"node {node.Name}");
            if (!deps.Nodes.Static) _ = reconciled.ContinueWith(_ => node.Ready = true, TaskScheduler.Default);
            await foreach (var e in events.ResponseStream.ReadAllAsync(stoppingToken))
            {
                if (e.Type == InstanceEvent.Types.Type.Exited && _actors.TryGetValue(e.Instance.Workload, out var actor))
                    await actor.InstanceExited(e.Instance, e.Successor);
            }
        }, stoppingToken);

    /// <summary>
    /// Follows the nodes the launchers announce in the registry (list, then watch): a new node gets a channel to its
    /// own address and an event pump; a node whose session expired or ended is lost, and every workload on it is placed
    /// again. After the first list, workloads whose node is not registered any more (lost while this supervisor was
    /// down) are placed again too, and workloads never placed count as reconciled.
    /// </summary>
    private Task FollowNodesAsync(CancellationToken stoppingToken)
    {
        var registry = services.GetRequiredService<Registry.V1.SessionRegistry.SessionRegistryClient>();
        var tokens = services.GetRequiredService<PlatformTokens>();
        var first = true;
        return FollowAsync("registry nodes", _ => { }, "lost nodes are not noticed until it is back", async connected =>
        {
            var alive = new Dictionary<string, Registry.V1.Session>(StringComparer.Ordinal);
            long revision = 0;
            var token = "";
            do
            {
                var page = await registry.ListSessionsAsync(new Registry.V1.ListSessionsRequest { Workload = Nodes.Workload, State = Registry.V1.Session.Types.State.Active, PageSize = 1000, PageToken = token },
                    deadline: DateTime.UtcNow.AddSeconds(30), cancellationToken: stoppingToken);
                foreach (var session in page.Sessions) alive[session.Instance] = session;
                revision = revision == 0 ? page.Revision : revision;
                token = page.NextPageToken;
            } while (token.Length > 0);
            using var watch = registry.WatchSessions(new Registry.V1.WatchSessionsRequest { FromRevision = revision, Workload = Nodes.Workload }, cancellationToken: stoppingToken);
            await watch.ResponseHeadersAsync;
            connected();
            foreach (var session in alive.Values) NodeUp(session, tokens, stoppingToken);
            foreach (var known in deps.Nodes.All.Where(n => !alive.ContainsKey(n.Name)).ToList()) await NodeDownAsync(known.Name, "not registered any more");
            if (first)
            {
                first = false;
                foreach (var actor in _actors.Values)
                {
                    if (actor.Node.Length == 0) await actor.Reconcile([], "");
                    else if (!alive.ContainsKey(actor.Node)) await actor.NodeGone(actor.Node);
                }
            }
            await foreach (var e in watch.ResponseStream.ReadAllAsync(stoppingToken))
            {
                if (e.Session.State == Registry.V1.Session.Types.State.Active) NodeUp(e.Session, tokens, stoppingToken);
                else await NodeDownAsync(e.Session.Instance, e.Type == Registry.V1.SessionEvent.Types.Type.Expired ? "its lease ran out" : $"ended: {e.Session.EndReason}");
            }
        }, stoppingToken);
    }

    private void NodeUp(Registry.V1.Session session, PlatformTokens tokens, CancellationToken stoppingToken)
    {
        var address = session.Attributes.GetValueOrDefault(Nodes.AddressAttribute, "");
        var capacity = int.TryParse(session.Attributes.GetValueOrDefault(Nodes.CapacityAttribute), out var c) ? c : 0;
        lock (_pumpLock)
        {
            if (_pumps.TryGetValue(session.Instance, out var running) && running.Node.Address == address && running.Node.Capacity == capacity &&
                running.Node.Labels.Count == session.Labels.Count && running.Node.Labels.All(l => session.Labels.TryGetValue(l.Key, out var v) && v == l.Value))
                return; // a renewal, or the same registration again
            if (!Uri.TryCreate(address, UriKind.Absolute, out _))
            {
                _logger.LogWarning("Node {Node} announced no usable address ('{Address}'); it is not used", session.Instance, address);
                return;
            }
            var channel = NodeSet.Channel(address, tokens);
            var node = new NodeClient(session.Instance, address, session.Labels.ToDictionary(), capacity, new Launcher.V1.Launcher.LauncherClient(channel), time, channel);
            deps.Nodes.Up(node);
            if (running.Stop is not null) StopPump(running);
            var stop = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
            _pumps[node.Name] = (node, stop, PumpNodeAsync(node, stop.Token));
            _logger.LogInformation("Node {Node} at {Address} (labels {Labels}, capacity {Capacity}): following its instances", node.Name, address,
                string.Join(",", node.Labels.Select(l => $"{l.Key}={l.Value}")), capacity == 0 ? "unlimited" : capacity);
        }
    }

    private async Task NodeDownAsync(string name, string why)
    {
        lock (_pumpLock)
        {
            if (!_pumps.Remove(name, out var running)) return;
            deps.Nodes.Down(name);
            StopPump(running);
        }
        _logger.LogWarning("Node {Node} is lost ({Why}): its {Count} workloads are placed again", name, why, _actors.Values.Count(a => a.Node == name));
        // Every workload hears it (each decides by its own node as it is when the message is handled: one starting
        // there right now is among them).
        foreach (var actor in _actors.Values) await actor.NodeGone(name);
    }

    private static void StopPump((NodeClient Node, CancellationTokenSource Stop, Task Pump) pump)
    {
        pump.Stop.Cancel();
        _ = pump.Pump.ContinueWith(_ =>
        {
            pump.Stop.Dispose();
            pump.Node.Channel?.Dispose();
        }, TaskScheduler.Default);
    }

    /// <summary>Follows the Monitor's transitions; an UNHEALTHY verdict on a target labelled with a workload and a
    /// generation goes to that workload. After a reconnect every workload adds its targets again (the monitor may have restarted).</summary>
    private Task PumpMonitorAsync(CancellationToken stoppingToken) => FollowAsync("Monitor statuses", connected => deps.MonitorStatuses = connected,
        "health verdicts are missing until it is back", async connected =>
        {
            using var statuses = deps.Monitor.WatchStatuses(new WatchStatusesRequest { IncludeCurrent = true }, cancellationToken: stoppingToken);
            await statuses.ResponseHeadersAsync;
            connected();
            foreach (var actor in _actors.Values) await actor.MonitorReconnected();
            await foreach (var status in statuses.ResponseStream.ReadAllAsync(stoppingToken))
            {
                // A target is this supervisor's by its labels (set by the workload that added it).
                if (status.State != AgentStatus.Types.State.Unhealthy ||
                    !status.Labels.TryGetValue(WorkloadLabels.Workload, out var name) ||
                    Core.WorkloadCore.GenerationOf(status.Labels) is not { } generation ||
                    !_actors.TryGetValue(name, out var actor)) continue;
                await actor.Unhealthy(generation, status.Labels.GetValueOrDefault(WorkloadLabels.Check, ""), status.Detail);
            }
        }, stoppingToken);

    /// <summary>One subscription kept up by a <see cref="Resubscriber"/> (0.5 s doubling to 5 s between attempts,
    /// reset once it is up); says when a stream is lost and what is missing meanwhile.</summary>
    private Task FollowAsync(string what, Action<bool> setConnected, string meanwhile, Func<Action, Task> follow, CancellationToken stoppingToken) =>
        new Resubscriber(what, _logger, time) { Meanwhile = meanwhile, Connected = setConnected }
            .RunAsync((up, _) => follow(up), stoppingToken);

    private async Task ReconciledWhenDoneAsync(long startedAt, string with)
    {
        // Every actor handles its Reconcile in order; a no-op question after it tells when all are done.
        try
        {
            await Task.WhenAll(_actors.Values.Select(a => a.FlushAsync()));
        }
        catch (PlatformException)
        {
            // A workload deleted meanwhile.
        }
        if (Interlocked.Exchange(ref _reconciledOnce, 1) == 0)
            _logger.LogInformation("Reconciled {Count} workloads with {With} in {Elapsed} ms", _actors.Count, with, (long)time.GetElapsedTime(startedAt).TotalMilliseconds);
    }
}
