using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using Google.Protobuf.WellKnownTypes;
using Microsoft.Extensions.Options;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.ServiceDefaults;

namespace Platform.Launcher;

/// <summary>A launch that passed validation: the full command line and everything about the instance.</summary>
public sealed record ResolvedLaunch(
    string Executable,
    IReadOnlyList<string> Args,
    IReadOnlyDictionary<string, string> Environment,
    string? WorkingDirectory,
    string Workload,
    string Template,
    IReadOnlyDictionary<string, string> Labels,
    TimeSpan StopGrace,
    string RequestId,
    IReadOnlyDictionary<string, string> SessionAttributes,
    string? TraceParent = null,
    string? TraceState = null,
    bool ArmedSuccessor = false)
{
    /// <summary>What the main process started outlives its own exit (still stopped with the instance).</summary>
    public bool KeepDescendants { get; init; }
}

/// <summary>
/// The instances of this node: starts them (each in its own session, output to files), sees their exits at once
/// (the reaper for our children, pidfds for re-adopted ones), stops whole trees, persists every change, publishes
/// STARTED / EXITED / ADOPTED events, and after a restart re-adopts the children that still run.
/// </summary>
public sealed class InstanceManager(
    InstanceStore store,
    Containment containment,
    PlatformTokens tokens,
    IOptions<LauncherOptions> options,
    IConfiguration configuration,
    TimeProvider time,
    ILogger<InstanceManager> logger) : IHostedService, IDisposable
{
    private readonly ConcurrentDictionary<string, Tracked> _instances = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Task<Instance>> _requests = new(StringComparer.Ordinal);
    private readonly Lock _requestsLock = new();
    private readonly Lock _subscribersLock = new();
    private readonly List<Channel<InstanceEvent>> _subscribers = [];
    private readonly PidfdMonitor _pidfds = new();
    private readonly string _node = options.Value.Node ?? System.Environment.MachineName;
    // Events a subscriber may fall behind before it is cut (as the platform's other watch streams do).
    private readonly int _watchBuffer = Math.Max(1, options.Value.WatchBuffer);
    private readonly string _dataDirectory = DataDirectory.Resolve(configuration, options.Value.DataDirectory);

    private sealed class Tracked(InstanceRecord record)
    {
        public Lock Lock { get; } = new();
        public InstanceRecord Record { get; set; } = record;
        public Instance Instance => Record.Instance;
        public Task<ExitStatus> Exit { get; set; } = Task.FromResult(ExitStatus.Unknown);
        public TaskCompletionSource Exited { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        /// <summary>Launched at once when the main process exits by itself (see ArmSuccessor); guarded by Lock.</summary>
        public ArmedSuccessor? Successor { get; set; }
        /// <summary>A stop was asked for: the exit that follows is not the instance's own, no successor starts.</summary>
        public bool StopRequested { get; set; }
        /// <summary>The exit has been seen: nothing can be armed any more.</summary>
        public bool ExitSeen { get; set; }
        /// <summary>Counted among its workload's exited instances (guarded by the manager's retention lock).</summary>
        public bool Retired { get; set; }
        /// <summary>Started by this launcher process (not re-adopted): the reaper sees its exit.</summary>
        public bool IsChild { get; init; }

        /// <summary>Whether an exit with <paramref name="status"/> starts the armed successor: not after a stop that was
        /// asked for, and not after a success when only failures are followed (an unknown status counts as a failure).
        /// The caller holds Lock.</summary>
        public ArmedSuccessor? Follows(ExitStatus status) =>
            Successor is { } armed && !StopRequested && (!armed.OnFailureOnly || status.Code != 0) ? armed : null;
    }

    // Exited instances per workload (a launch without one has its template's or program's name), oldest exit first:
    // the newest KeepExited of each are kept, and none past ExitedRetention (as the kubelet keeps a dead container or
    // two, not every one). Without this a crash loop grows the launcher's memory, its store and its disk by every run.
    private readonly Dictionary<string, Queue<Tracked>> _exited = new(StringComparer.Ordinal);
    private readonly Lock _retentionLock = new();

    private sealed record ArmedSuccessor(ResolvedLaunch Launch, bool OnFailureOnly, PreparedOutput Output);

    /// <summary>An instance id and its output directory, made ahead of the start; for an armed successor in a cgroup,
    /// its process too, held at the gate in its cgroup (see <see cref="Hold"/>).</summary>
    private sealed record PreparedOutput(string Id, string Directory, HeldProcess? Held = null, string? Cgroup = null);

    /// <summary>
    /// A new instance id and its output directory, made now; with <paramref name="files"/>, its two (empty) output
    /// files too. An armed successor gets them at arming: creating a directory and two files costs
    /// a few ms on an ordinary disk (journal writes), several times the spawn itself, and must not delay a restart.
    /// </summary>
    private PreparedOutput PrepareOutput(bool files)
    {
        var id = System.Ulid.NewUlid().ToString();
        var directory = Path.Combine(_dataDirectory, "instances", id);
        Directory.CreateDirectory(directory);
        if (files)
        {
            File.Create(Path.Combine(directory, "stdout.log")).Dispose();
            File.Create(Path.Combine(directory, "stderr.log")).Dispose();
        }
        return new PreparedOutput(id, directory);
    }

    /// <summary>Removes the output directory prepared for a successor that will not start.</summary>
    private void Discard(ArmedSuccessor? successor)
    {
        if (successor is not null) Discard(successor.Output);
    }

    private void Discard(PreparedOutput prepared)
    {
        if (prepared.Held is { } held)
        {
            // Killed unrun (or, released early at an exit that a stop then overtook, killed with whatever it forked
            // meanwhile); its cgroup goes once it is gone.
            var cgroup = prepared.Cgroup;
            var gone = held.Abort();
            if (held.ReleasedEarly && cgroup is not null) gone = Task.WhenAll(gone, Cgroup.KillAsync(cgroup, TimeSpan.FromSeconds(5)));
            _ = gone.ContinueWith(_ => containment.Discard(cgroup), TaskScheduler.Default);
        }
        try
        {
            Directory.Delete(prepared.Directory, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            logger.LogWarning("Could not remove {Directory}: {Error}", prepared.Directory, e.Message);
        }
    }

    public string Node => _node;

    /// <summary>Re-adopts the children of a previous run that still run; records the others as exited.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        // Become the child subreaper (and start reaping) now, before the first launch.
        _ = ChildReaper.Shared;
        foreach (var record in store.LoadAll())
        {
            var tracked = new Tracked(record);
            _instances[record.Instance.Id] = tracked;
            if (record.RequestId.Length > 0) _requests[record.RequestId] = Task.FromResult(record.Instance);
            if (record.Instance.State == Instance.Types.State.Exited)
            {
                tracked.Exited.TrySetResult();
                continue;
            }

            // Same boot and same start time: the very process we started, not a stranger with a reused pid.
            if (record.BootId == ProcFs.BootId && ProcFs.IsAlive(record.Identity))
            {
                var instance = record.Instance.Clone();
                instance.State = Instance.Types.State.Running;
                instance.Adopted = true;
                Save(tracked, instance);
                tracked.Exit = _pidfds.WatchAsync(record.Identity);
                Publish(InstanceEvent.Types.Type.Adopted, instance);
                _ = WatchExitAsync(tracked);
                logger.LogInformation("Re-adopted instance {Id} ({Workload}, pid {Pid})", instance.Id, instance.Workload, instance.Pid);
            }
            else
            {
                var instance = record.Instance.Clone();
                instance.State = Instance.Types.State.Exited;
                instance.ExitTime = Timestamp.FromDateTimeOffset(time.GetUtcNow());
                Save(tracked, instance);
                tracked.Exited.TrySetResult();
                // What it left in its cgroup goes too (bounded: one write and a wait of at most 5 s).
                _ = containment.CleanUpAsync(instance);
                logger.LogInformation("Instance {Id} ({Workload}) ended while the launcher was down; its exit status is unknown", instance.Id, instance.Workload);
            }
        }
        foreach (var exited in _instances.Values.Where(t => t.Instance.State == Instance.Types.State.Exited).OrderBy(t => t.Instance.ExitTime?.ToDateTimeOffset()))
            Retire(exited);
        ForgetExpired();
        containment.RemoveUnused(_instances.Values.Where(t => t.Instance.State != Instance.Types.State.Exited).Select(t => t.Instance.Id).ToHashSet());
        // Output directories with no record: prepared for successors that never started (arms do not outlive the launcher).
        var instancesDirectory = Path.Combine(_dataDirectory, "instances");
        // Only directories whose files are all empty: nothing anyone could want is lost.
        if (Directory.Exists(instancesDirectory))
            foreach (var directory in Directory.EnumerateDirectories(instancesDirectory))
            {
                if (_instances.ContainsKey(Path.GetFileName(directory))) continue;
                try
                {
                    if (new DirectoryInfo(directory).EnumerateFiles("*", SearchOption.AllDirectories).All(f => f.Length == 0))
                        Directory.Delete(directory, recursive: true);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    logger.LogWarning("Could not remove the unused output directory {Directory}: {Error}", directory, e.Message);
                }
            }
        return Task.CompletedTask;
    }

    /// <summary>Children outlive the launcher by design: nothing to stop.</summary>
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Starts an instance; the same request id (even concurrently) starts one process and answers with it.</summary>
    public Task<Instance> LaunchAsync(ResolvedLaunch launch) => LaunchAsync(launch, null);

    private Task<Instance> LaunchAsync(ResolvedLaunch launch, PreparedOutput? prepared, Task? exitsAfter = null)
    {
        if (launch.RequestId.Length == 0) return Task.Run(() => StartAsync(launch, prepared, exitsAfter));
        lock (_requestsLock)
        {
            if (_requests.TryGetValue(launch.RequestId, out var existing))
            {
                if (prepared is not null) Discard(prepared); // launched already
                // Launched already: the instance as it is now (it may have exited since), not as it was at its start.
                return existing.IsCompletedSuccessfully ? Task.FromResult(Get(existing.Result.Id)) : existing;
            }
            var started = Task.Run(() => StartAsync(launch, prepared, exitsAfter));
            _requests[launch.RequestId] = started;
            // A launch that failed is forgotten: the caller may fix the problem and try the same id again.
            started.ContinueWith(t => { lock (_requestsLock) _requests.Remove(launch.RequestId); },
                CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
            return started;
        }
    }

    private async Task<Instance> StartAsync(ResolvedLaunch launch, PreparedOutput? prepared = null, Task? exitsAfter = null)
    {
        var (id, logDirectory, held, heldCgroup) = prepared ?? PrepareOutput(files: false);
        // Awaited, never waited on: a pool thread blocked on a gRPC call starves the pool on a small machine. An armed
        // successor does not wait for the registry (a durable write, a few ms): its session is registered right after.
        var sessionId = RegisterBeforeStart is { } register && !launch.ArmedSuccessor ? await register(id, launch.Workload, _node, launch.Labels) : null;

        SpawnedProcess process;
        var cgroup = heldCgroup;
        try
        {
            if (held is not null) process = held.Release(); // placed in its cgroup when it was armed: it runs now
            else
            {
                cgroup = containment.Prepare(id);
                process = ChildReaper.Shared.Spawn(Spawn(launch, id, logDirectory, sessionId, cgroup));
            }
        }
        catch (Exception e) when (e is SpawnException or IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            // Nothing half-started left behind.
            Directory.Delete(logDirectory, recursive: true);
            containment.Discard(cgroup);
            if (e is not SpawnException spawn) throw PlatformException.Unavailable($"cannot start the instance: {e.Message}");
            throw spawn.NotFound ? PlatformException.NotFound(e.Message)
                : spawn.PermissionDenied ? PlatformException.PermissionDenied(e.Message)
                : PlatformException.Conflict(e.Message);
        }

        var instance = new Instance
        {
            Id = id,
            Workload = launch.Workload,
            Node = _node,
            Pid = process.Pid,
            State = Instance.Types.State.Running,
            StartTime = Timestamp.FromDateTimeOffset(time.GetUtcNow()),
            Labels = { launch.Labels.ToDictionary() },
            Template = launch.Template,
            SessionId = sessionId ?? "",
            Cgroup = cgroup ?? "",
            KeepDescendants = launch.KeepDescendants,
        };
        var tracked = new Tracked(new InstanceRecord(instance, process.Identity, ProcFs.BootId, launch.StopGrace, logDirectory, launch.RequestId))
        {
            Exit = process.Exited,
            IsChild = true,
        };
        _instances[id] = tracked;
        Save(tracked, instance);
        Publish(InstanceEvent.Types.Type.Started, instance);
        Started?.Invoke(instance.Clone(), launch.SessionAttributes);
        _ = WatchExitAsync(tracked, exitsAfter);
        return instance.Clone();
    }

    /// <summary>What to spawn for a launch: its command line and the environment the platform adds.</summary>
    private SpawnRequest Spawn(ResolvedLaunch launch, string id, string logDirectory, string? sessionId, string? cgroup)
    {
        var env = new Dictionary<string, string>(launch.Environment, StringComparer.Ordinal)
        {
            ["PLATFORM_INSTANCE_ID"] = id,
            ["PLATFORM_WORKLOAD"] = launch.Workload,
            ["PLATFORM_NODE"] = _node,
        };
        if (configuration["services:registry:grpc:0"] is { } registry) env["PLATFORM_REGISTRY_ADDRESS"] = registry;
        // The agent's own token: its registry session and nothing else (never the platform's token).
        if (tokens.AgentTokenFor(id) is { } agentToken) env["PLATFORM_TOKEN"] = agentToken;
        AddTelemetry(env, launch.Workload, id);
        if (sessionId is not null) env["PLATFORM_SESSION_ID"] = sessionId;
        // The caller's trace continues in the child: under the Launch call's server span when that span is in the
        // caller's trace, else directly under the caller's own context (as the request carried it).
        if (Activity.Current is { IdFormat: ActivityIdFormat.W3C } activity &&
            (launch.TraceParent is null || launch.TraceParent.Contains(activity.TraceId.ToHexString(), StringComparison.Ordinal)))
        {
            env["TRACEPARENT"] = activity.Id!;
            if ((activity.TraceStateString ?? launch.TraceState) is { } state) env["TRACESTATE"] = state;
        }
        else if (launch.TraceParent is not null)
        {
            env["TRACEPARENT"] = launch.TraceParent;
            if (launch.TraceState is not null) env["TRACESTATE"] = launch.TraceState;
        }

        return new SpawnRequest(launch.Executable, launch.Args, env, launch.WorkingDirectory,
            StdioTarget.File(Path.Combine(logDirectory, "stdout.log")), StdioTarget.File(Path.Combine(logDirectory, "stderr.log")))
        {
            Cgroup = cgroup,
        };
    }

    /// <summary>
    /// Starts an armed successor's process now, in its cgroup, held at the gate: at the exit it only has to be released.
    /// Moving a process into a cgroup waits for an RCU grace period after an idle spell (5-12 ms here), which must not
    /// delay a restart. Without cgroups, or if the hold fails, the successor is spawned at the exit as any launch.
    /// </summary>
    private PreparedOutput Hold(ResolvedLaunch launch, PreparedOutput output)
    {
        if (!containment.UsesCgroups) return output;
        string? cgroup = null;
        var previous = Activity.Current;
        Activity.Current = null; // as at the exit: the successor continues the trace it was armed with
        try
        {
            cgroup = containment.Prepare(output.Id);
            return output with { Held = ChildReaper.Shared.SpawnHeld(Spawn(launch, output.Id, output.Directory, null, cgroup)), Cgroup = cgroup };
        }
        catch (Exception e) when (e is SpawnException or IOException or UnauthorizedAccessException)
        {
            containment.Discard(cgroup);
            logger.LogWarning("Successor {Id}: not held ready ({Error}); it is spawned at the exit", output.Id, e.Message);
            return output;
        }
        finally
        {
            Activity.Current = previous;
        }
    }

    /// <summary>Variables of the OpenTelemetry exporter the launcher itself was given, passed on to what it launches.</summary>
    private static readonly string[] TelemetryVariables =
        ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BLRP_SCHEDULE_DELAY", "OTEL_METRIC_EXPORT_INTERVAL"];

    /// <summary>
    /// An instrumented agent exports where the platform does (the AppHost's dashboard, a cluster's collector), as the
    /// service named after its workload and with its instance id as <c>service.instance.id</c>, so it shows up beside
    /// the platform's services. What the launch request sets itself wins.
    /// </summary>
    private void AddTelemetry(Dictionary<string, string> env, string workload, string instanceId)
    {
        if (string.IsNullOrWhiteSpace(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"])) return;
        foreach (var name in TelemetryVariables)
        {
            if (configuration[name] is { Length: > 0 } value) env.TryAdd(name, value);
        }
        if (workload.Length > 0) env.TryAdd("OTEL_SERVICE_NAME", workload);
        env["OTEL_RESOURCE_ATTRIBUTES"] = env.TryGetValue("OTEL_RESOURCE_ATTRIBUTES", out var attributes) && attributes.Length > 0
            ? $"service.instance.id={instanceId},{attributes}"
            : $"service.instance.id={instanceId}";
    }

    /// <summary>Records and publishes the instance's exit; a successor's exit never before its predecessor's
    /// (<paramref name="after"/>), even when it crashes at once, so that watchers see them in order.</summary>
    private async Task WatchExitAsync(Tracked tracked, Task? after = null)
    {
        ExitStatus status;
        try
        {
            status = await tracked.Exit;
            if (after is not null) await after;
        }
        catch (OperationCanceledException)
        {
            return; // the launcher is stopping; the child lives on and is re-adopted later
        }

        var exitTime = Timestamp.FromDateTimeOffset(time.GetUtcNow());
        // An armed successor starts first, before the exit is recorded and published: the restart does not wait for
        // a round trip through whoever armed it (Tracked.Follows says whether it starts).
        ArmedSuccessor? successor;
        lock (tracked.Lock)
        {
            tracked.ExitSeen = true;
            if (tracked.IsChild) ChildReaper.Shared.OnExit(tracked.Record.Identity.Pid, null); // a hook set after the reap would linger
            successor = tracked.Follows(status);
            if (successor is null) Discard(tracked.Successor);
            tracked.Successor = null;
        }
        Instance? next = null;
        var published = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (successor is not null)
        {
            try
            {
                Activity.Current = null; // the successor continues the trace it was armed with, not the predecessor's launch
                next = await LaunchAsync(successor.Launch, successor.Output, published.Task);
            }
            catch (Exception e)
            {
                logger.LogWarning("Instance {Id}: its armed successor could not be started: {Error}", tracked.Instance.Id, e is Grpc.Core.RpcException r ? r.Status.Detail : e.Message);
            }
        }

        // What the main process left behind is gone before its exit is published (unless the launch keeps it).
        await containment.CleanUpAsync(tracked.Instance);
        var instance = tracked.Instance.Clone();
        instance.State = Instance.Types.State.Exited;
        instance.ExitTime = exitTime;
        if (status.Code is { } code) instance.ExitCode = code;
        if (status.Signal is { } signal) instance.Signal = signal;
        instance.ChildProcessCount = 0;
        instance.RssBytes = 0;
        instance.SuccessorId = next?.Id ?? "";
        Save(tracked, instance);
        Publish(InstanceEvent.Types.Type.Exited, instance, next);
        published.TrySetResult();
        Ended?.Invoke(instance.Clone());
        tracked.Exited.TrySetResult();
        Retire(tracked);
    }

    /// <summary>Counts an exited instance among its workload's; forgets the oldest beyond <see cref="LauncherOptions.KeepExited"/>.
    /// One whose descendants were kept in its cgroup is counted only once they are stopped.</summary>
    private void Retire(Tracked tracked)
    {
        if (tracked.Instance.KeepDescendants && tracked.Instance.Cgroup.Length > 0 && !tracked.StopRequested) return;
        List<Tracked> forget = [];
        lock (_retentionLock)
        {
            if (tracked.Retired || !_instances.ContainsKey(tracked.Instance.Id)) return;
            tracked.Retired = true;
            if (!_exited.TryGetValue(tracked.Instance.Workload, out var queue)) _exited[tracked.Instance.Workload] = queue = new();
            queue.Enqueue(tracked);
            while (queue.Count > Math.Max(0, options.Value.KeepExited)) forget.Add(queue.Dequeue());
        }
        Forget(forget);
    }

    /// <summary>Forgets every exited instance whose exit is older than <see cref="LauncherOptions.ExitedRetention"/>;
    /// returns how many (called by the housekeeping timer).</summary>
    public int ForgetExpired()
    {
        var cutoff = time.GetUtcNow() - options.Value.ExitedRetention;
        List<Tracked> forget = [];
        lock (_retentionLock)
        {
            foreach (var (workload, queue) in _exited.ToList())
            {
                while (queue.TryPeek(out var oldest) && (oldest.Instance.ExitTime?.ToDateTimeOffset() ?? DateTimeOffset.MinValue) < cutoff)
                    forget.Add(queue.Dequeue());
                if (queue.Count == 0) _exited.Remove(workload);
            }
        }
        Forget(forget);
        return forget.Count;
    }

    /// <summary>Drops exited instances: their records, their request ids and their output directories.</summary>
    private void Forget(List<Tracked> forget)
    {
        if (forget.Count == 0) return;
        foreach (var tracked in forget)
        {
            _instances.TryRemove(tracked.Instance.Id, out _);
            if (tracked.Record.RequestId is { Length: > 0 } requestId)
                lock (_requestsLock)
                    if (_requests.TryGetValue(requestId, out var launched) && launched.IsCompletedSuccessfully && launched.Result.Id == tracked.Instance.Id)
                        _requests.Remove(requestId);
        }
        store.Delete([.. forget.Select(t => t.Instance.Id)]);
        foreach (var tracked in forget)
        {
            try
            {
                if (Directory.Exists(tracked.Record.LogDirectory)) Directory.Delete(tracked.Record.LogDirectory, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                logger.LogWarning("Could not remove the output of the forgotten instance {Id}: {Error}", tracked.Instance.Id, e.Message);
            }
        }
    }

    /// <summary>
    /// Arms (or, with null, disarms) the launch made at once when the instance's main process exits by itself.
    /// FAILED_PRECONDITION once its exit has been seen or a stop was asked for.
    /// </summary>
    public Instance ArmSuccessor(string id, ResolvedLaunch? successor, bool onFailureOnly)
    {
        var tracked = Find(id);
        var launch = successor is null ? null : successor with { ArmedSuccessor = true };
        var armed = launch is null ? null : new ArmedSuccessor(launch, onFailureOnly, Hold(launch, PrepareOutput(files: true)));
        ArmedSuccessor? replaced;
        lock (tracked.Lock)
        {
            string? refusal = null;
            if (tracked.ExitSeen || tracked.Instance.State == Instance.Types.State.Exited)
                refusal = $"instance '{id}' has exited; a successor can be armed only for a running instance";
            else if (tracked.StopRequested || tracked.Instance.State == Instance.Types.State.Stopping)
                refusal = $"instance '{id}' is being stopped; a successor starts only after an exit of its own";
            if (refusal is not null)
            {
                Discard(armed);
                throw PlatformException.Conflict(refusal);
            }
            replaced = tracked.Successor;
            tracked.Successor = armed;
            // Released on the reaper's thread at the exit, before the exit goes through the thread pool (a restart in
            // about the time an exec takes); the exit's path below then finds it running.
            if (tracked.IsChild && armed?.Output.Held is { } held)
                ChildReaper.Shared.OnExit(tracked.Record.Identity.Pid, status => ReleaseEarly(tracked, armed, held, status));
        }
        Discard(replaced);
        return Get(id);
    }

    /// <summary>At the exit, on the reaper's thread: the armed successor runs at once if the exit's path would start it.</summary>
    private static void ReleaseEarly(Tracked tracked, ArmedSuccessor armed, HeldProcess held, ExitStatus status)
    {
        lock (tracked.Lock)
        {
            if (tracked.Follows(status) == armed) held.ReleaseEarly();
            tracked.ExitSeen = true; // nothing can be armed any more (as once the exit's path below has run)
        }
    }

    private void Save(Tracked tracked, Instance instance)
    {
        lock (tracked.Lock)
        {
            tracked.Record = tracked.Record with { Instance = instance };
            store.Put(tracked.Record);
        }
    }

    /// <summary>
    /// Stops the instance's whole tree (SIGTERM to every process of it, the grace, SIGKILL to every survivor) and
    /// returns it once its exit is recorded. An exited instance is returned unchanged (what it kept running, with
    /// keep_descendants, is stopped).
    /// </summary>
    public async Task<Instance> StopInstanceAsync(string id, TimeSpan? grace, CancellationToken cancellationToken)
    {
        var tracked = Find(id);
        lock (tracked.Lock)
        {
            if (tracked.Instance.State == Instance.Types.State.Exited && !(tracked.Instance.KeepDescendants && tracked.Instance.Cgroup.Length > 0)) return Get(id);
            // A stop asked for is not the instance's own exit: no successor follows it.
            tracked.StopRequested = true;
            Discard(tracked.Successor);
            tracked.Successor = null;
            if (!tracked.ExitSeen)
            {
                var stopping = tracked.Instance.Clone();
                stopping.State = Instance.Types.State.Stopping;
                Save(tracked, stopping);
            }
        }
        var result = await containment.StopAsync(tracked.Instance, tracked.Record.Identity, grace ?? tracked.Record.StopGrace, cancellationToken);
        if (!result.AllGone) logger.LogWarning("Instance {Id}: {Survivors} processes survived SIGKILL", id, result.Survivors);
        await tracked.Exited.Task.WaitAsync(TimeSpan.FromSeconds(10), cancellationToken);
        if (tracked.Instance.KeepDescendants) containment.Discard(tracked.Instance.Cgroup.Length > 0 ? tracked.Instance.Cgroup : null); // kept until this stop
        var stopped = Get(id);
        Retire(tracked); // an instance whose descendants were kept is counted from now
        return stopped;
    }

    /// <summary>The instance with live figures from /proc (its tree only).</summary>
    public Instance Get(string id) => Get(Find(id));

    private Instance Get(Tracked tracked)
    {
        var instance = tracked.Instance.Clone();
        instance.SuccessorArmed = tracked.Successor is not null;
        if (instance.State != Instance.Types.State.Exited && ProcFs.IsAlive(tracked.Record.Identity))
        {
            var tree = containment.Members(instance);
            var (rss, cpu) = ProcFs.Usage(tree);
            instance.ChildProcessCount = Math.Max(0, tree.Count - 1);
            instance.RssBytes = rss;
            instance.CpuTime = Duration.FromTimeSpan(cpu);
        }
        return instance;
    }

    /// <summary>Instances in id order, with live figures from /proc.</summary>
    public List<Instance> List(string workload, Instance.Types.State state, string afterId, int limit)
    {
        var page = _instances.Values
            .Where(t => (workload.Length == 0 || t.Instance.Workload == workload) && (state == Instance.Types.State.Unspecified || t.Instance.State == state))
            .Where(t => string.CompareOrdinal(t.Instance.Id, afterId) > 0)
            .OrderBy(t => t.Instance.Id, StringComparer.Ordinal)
            .Take(limit)
            .ToList();
        return page.Select(Get).ToList(); // an instance forgotten meanwhile is listed as it was
    }

    /// <summary>The output directories of the instances that still run (for log rotation; no /proc reads).</summary>
    public List<string> RunningOutputDirectories() =>
        _instances.Values.Where(t => t.Instance.State != Instance.Types.State.Exited).Select(t => t.Record.LogDirectory).ToList();

    /// <summary>Registers a session before a start, when the registry is reachable (set by the wiring).</summary>
    public Func<string, string, string, IReadOnlyDictionary<string, string>, Task<string?>>? RegisterBeforeStart { get; set; }

    /// <summary>Raised after an instance started (registration of its session is queued here).</summary>
    public event Action<Instance, IReadOnlyDictionary<string, string>>? Started;

    /// <summary>Raised after an instance exited.</summary>
    public event Action<Instance>? Ended;

    /// <summary>Records the registry session of an instance.</summary>
    public void SetSession(string id, string sessionId)
    {
        if (!_instances.TryGetValue(id, out var tracked)) return;
        var instance = tracked.Instance.Clone();
        instance.SessionId = sessionId;
        Save(tracked, instance);
    }

    public string? SessionOf(string id) => _instances.TryGetValue(id, out var tracked) ? tracked.Instance.SessionId : null;

    /// <summary>Session id to instance, for the running instances that have a session.</summary>
    public Dictionary<string, Instance> RunningSessions() =>
        _instances.Values.Select(t => t.Instance)
            .Where(i => i.State != Instance.Types.State.Exited && i.SessionId.Length > 0)
            .ToDictionary(i => i.SessionId, i => i);

    /// <summary>Where an instance's output is, and whether it still runs.</summary>
    public (string Directory, Task Exited) Output(string id)
    {
        var tracked = Find(id);
        return (tracked.Record.LogDirectory, tracked.Exited.Task);
    }

    private Tracked Find(string id) =>
        _instances.TryGetValue(id, out var tracked) ? tracked : throw PlatformException.NotFound("instance", id);

    private readonly ConcurrencyLimit _launches = new("launches are being started");

    /// <summary>A place among the launches being started, or RESOURCE_EXHAUSTED when <paramref name="max"/> are.</summary>
    public IDisposable EnterLaunch(int max) => _launches.Enter(max, "Launcher:MaxLaunchesInFlight");

    // ---- Events ----

    public ChannelReader<InstanceEvent> Subscribe(out IDisposable subscription)
    {
        var channel = Channel.CreateBounded<InstanceEvent>(new BoundedChannelOptions(_watchBuffer) { SingleReader = true });
        lock (_subscribersLock) _subscribers.Add(channel);
        subscription = new Unsubscriber(this, channel);
        return channel.Reader;
    }

    private sealed class Unsubscriber(InstanceManager manager, Channel<InstanceEvent> channel) : IDisposable
    {
        public void Dispose()
        {
            lock (manager._subscribersLock) manager._subscribers.Remove(channel);
            channel.Writer.TryComplete();
        }
    }

    private void Publish(InstanceEvent.Types.Type type, Instance instance, Instance? successor = null)
    {
        var e = new InstanceEvent { Type = type, Instance = instance.Clone(), Time = Timestamp.FromDateTimeOffset(time.GetUtcNow()), Successor = successor };
        lock (_subscribersLock)
        {
            // A subscriber that fell a whole buffer behind is cut, never silently left without events: it knows
            // where to resume (the running instances, listed, then the watch again).
            _subscribers.RemoveAll(subscriber => !subscriber.Writer.TryWrite(e) && subscriber.Writer.TryComplete(PlatformException.Exhausted(
                $"this watcher fell more than {_watchBuffer} events behind; list the instances (ListInstances) and watch again")));
        }
    }

    public void Dispose()
    {
        // Successors held at their gates are killed unrun (nothing would release them).
        foreach (var tracked in _instances.Values)
            lock (tracked.Lock)
            {
                Discard(tracked.Successor);
                tracked.Successor = null;
            }
        _pidfds.Dispose();
        containment.Close();
    }
}
