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
    ILoggerFactory loggers) : BackgroundService
{
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
        await Task.WhenAll(PumpLauncherAsync(stoppingToken), PumpMonitorAsync(stoppingToken));
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

    /// <summary>Subscribes to the Launcher's events, then lists its running instances and reconciles every workload;
    /// from then on an EXITED event reaches its workload at once. Starts over after any break.</summary>
    private Task PumpLauncherAsync(CancellationToken stoppingToken) => FollowAsync("Launcher events", connected => deps.LauncherEvents = connected,
        "running workloads are left alone until it is back", async connected =>
        {
            using var events = deps.Launcher.WatchInstanceEvents(new WatchInstanceEventsRequest(), cancellationToken: stoppingToken);
            await events.ResponseHeadersAsync;
            var listedAt = time.GetTimestamp();
            var running = new List<Instance>();
            var token = "";
            do
            {
                var page = await deps.Launcher.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000, PageToken = token },
                    deadline: DateTime.UtcNow.AddSeconds(30), cancellationToken: stoppingToken);
                running.AddRange(page.Instances);
                token = page.NextPageToken;
            } while (token.Length > 0);
            var byWorkload = running.Where(i => i.Labels.ContainsKey(WorkloadLabels.Workload)).ToLookup(i => i.Labels[WorkloadLabels.Workload]);
            await Task.WhenAll(_actors.Values.Select(a => a.Reconcile([.. byWorkload[a.Name]])));
            connected();
            _ = ReconciledWhenDoneAsync(listedAt);
            await foreach (var e in events.ResponseStream.ReadAllAsync(stoppingToken))
            {
                if (e.Type == InstanceEvent.Types.Type.Exited && _actors.TryGetValue(e.Instance.Workload, out var actor))
                    await actor.InstanceExited(e.Instance, e.Successor);
            }
        }, stoppingToken);

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

    private async Task ReconciledWhenDoneAsync(long startedAt)
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
            _logger.LogInformation("Reconciled {Count} workloads with the launcher in {Elapsed} ms", _actors.Count, (long)time.GetElapsedTime(startedAt).TotalMilliseconds);
    }
}
