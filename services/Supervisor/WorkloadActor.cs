using System.Diagnostics;
using System.Globalization;
using System.Threading.Channels;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Platform.ServiceDefaults;
using Platform.Launcher.V1;
using Platform.Monitor.V1;
using Platform.Restarts;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor;

/// <summary>
/// One supervised workload. Everything that can change it (apply, delete, restart by hand, an exit from the Launcher,
/// an UNHEALTHY verdict from the Monitor, a reconcile after a reconnect, its own timers) is a message handled one at a
/// time, so concurrent triggers cannot start two instances: a trigger names the generation it is about, and one that
/// refers to an instance already replaced is dropped. A start happens only when no instance is current; a restart
/// stops the old tree and waits for it first. Each start has a fencing number (the generation), stored before the
/// launch and used as the Launcher's request id, so a retried or repeated start can never launch twice.
/// </summary>
public sealed class WorkloadActor
{
    public const string LabelWorkload = "platform.supervisor/workload";
    public const string LabelGeneration = "platform.supervisor/generation";
    /// <summary>On monitor targets: which of the workload's checks it is (health or heartbeat).</summary>
    public const string LabelCheck = "platform.supervisor/check";
    public const string TargetPrefix = "supervisor/";
    private static readonly ActivitySource Source = new("Platform.Supervisor");

    private readonly Channel<Func<Task>> _inbox = Channel.CreateUnbounded<Func<Task>>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Dependencies _deps;
    private readonly WorkloadStore _store;
    private readonly SupervisorOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<Workload, Phase> _publish;
    private readonly CancellationTokenSource _stop = new();
    private Workload _workload;
    private readonly RestartTracker _tracker;
    private readonly string _lifecycle;
    private readonly ActivityContext _lifecycleContext; // parsed once: its trace id is the workload's
    private string? _previousAttempt;
    private bool _launchPending;
    private bool _reconciled;
    private bool _reconcileAgain; // a reconcile could not finish (launcher unreachable): retried at the next resync
    private bool _targetsAdded;
    private long _targetsGeneration; // the generation whose targets the monitor may hold (0: none)
    private bool _deleted;
    private DateTimeOffset _retryAt;
    private Task _loop = Task.CompletedTask;
    // The successor armed at the Launcher (generation N+1, started there at once if instance N fails; 0: none; -1: one
    // may be, of an unknown generation): its start span, begun at arming and ended when the successor is seen, and the
    // context the child got.
    private long _armedGeneration;
    private string? _armedTraceparent;

    public WorkloadActor(WorkloadRecord record, bool reconciled, Dependencies deps, WorkloadStore store, SupervisorOptions options,
        TimeProvider time, ILogger logger, Action<Workload, Phase> publish)
    {
        _deps = deps;
        _store = store;
        _options = options;
        _time = time;
        _logger = logger;
        _publish = publish;
        _workload = record.Workload;
        _tracker = new RestartTracker(WorkloadValidation.ToPolicy(record.Workload.RestartPolicy), time, record.Restart);
        _lifecycle = record.LifecycleContext;
        _lifecycleContext = ActivityContext.Parse(_lifecycle, null);
        _previousAttempt = record.PreviousAttempt;
        _reconciled = reconciled;
        // Generation N stored with no instance: its launch may or may not have happened; it is retried under the same
        // number (the Launcher answers a repeated request id with the first instance).
        _launchPending = _workload.Status.Phase == Phase.Pending && _workload.Status.InstanceId.Length == 0 && _workload.Status.Generation > 0;
        Snapshot = _workload.Clone();
    }

    public string Name => _workload.Name;

    /// <summary>The workload as of its last change (never mutated once published).</summary>
    public Workload Snapshot { get; private set; }

    public void Start() => _loop = Task.Run(async () =>
    {
        await RunAsync();
        await DrainAsync();
    });

    // ------------------------------------------------------------------ messages

    private Task Post(Func<Task> message)
    {
        _inbox.Writer.TryWrite(() => _deleted ? Task.CompletedTask : message());
        return Task.CompletedTask;
    }

    private async Task<T> Ask<T>(Func<Task<T>> question)
    {
        var reply = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_inbox.Writer.TryWrite(async () =>
        {
            try
            {
                if (_deleted) throw PlatformException.NotFound("workload", Name, $"workload '{Name}' was deleted");
                reply.TrySetResult(await question());
            }
            catch (Exception e)
            {
                reply.TrySetException(e);
            }
        }))
            throw PlatformException.NotFound("workload", Name, $"workload '{Name}' was deleted");
        return await reply.Task;
    }

    /// <summary>The first start of a new workload, answered to its ApplyWorkload: a launch the Launcher refuses
    /// (unknown template, bad executable) is the caller's mistake and is thrown.</summary>
    public Task<Workload> FirstStartAsync() => Ask(async () =>
    {
        var refusal = await StartAsync("created");
        if (refusal is not null) throw refusal;
        return Snapshot;
    });

    public Task<Workload> ApplyAsync(Workload spec) => Ask(async () =>
    {
        var launchChanged = !spec.Launch.Equals(_workload.Launch);
        var phase = _workload.Status.Phase;
        if (launchChanged && (phase is Phase.BackingOff or Phase.CoolingOff || _launchPending))
            throw PlatformException.Conflict($"workload '{Name}' is {phase} (restarting); its launch spec cannot change now. Apply again once it runs, or restart it by hand");
        var healthChanged = !Equals(spec.Health, _workload.Health);
        var previousLaunch = _workload.Launch;
        // A new launch spec takes effect by a restart: stop the old tree first; if that cannot be done, nothing changes.
        var restart = launchChanged && _workload.Status.InstanceId.Length > 0;
        if (restart && await StopCurrentAsync("launch spec changed") == StopOutcome.Unreachable)
            throw PlatformException.Unavailable($"the launcher is unreachable; workload '{Name}' keeps running its current launch spec");
        _workload.Launch = spec.Launch;
        _workload.RestartPolicy = spec.RestartPolicy;
        _workload.Health = spec.Health;
        _workload.StopGrace = spec.StopGrace;
        _workload.Labels.Clear();
        _workload.Labels.Add(spec.Labels);
        _workload.UpdateTime = Timestamp.FromDateTimeOffset(_time.GetUtcNow());
        _tracker.Policy = WorkloadValidation.ToPolicy(spec.RestartPolicy);
        Save(phase, "updated");
        if (restart)
        {
            _tracker.RestartNow();
            if (await StartAsync("launch spec changed") is { } refusal)
            {
                // The launcher refused the new spec (unknown template, missing executable): back to the previous
                // one, started again at once, and the caller hears why. The spec is as it was before the call.
                _workload.Launch = previousLaunch;
                _tracker.RestartNow();
                Save(Phase.Pending, $"the new launch spec was refused ({refusal.Status.Detail}); back to the previous one");
                await StartAsync("previous launch spec restored");
                throw PlatformException.Like(refusal.StatusCode,
                    $"the launcher refused the new launch spec: {refusal.Status.Detail}; workload '{Name}' keeps its previous launch spec");
            }
        }
        else
        {
            if (healthChanged && _workload.Status.InstanceId.Length > 0)
            {
                // Removed before the new ones are added under the same ids (a late removal would drop the new ones).
                _targetsAdded = false;
                _targetsGeneration = 0;
                await RemoveTargetsInBackgroundAsync(_workload.Status.Generation);
                await EnsureTargetsAsync();
            }
            await ArmAsync(); // the policy or the labels may have changed: the armed successor follows
        }
        return Snapshot;
    });

    /// <summary>A restart by hand; coalesced with any other trigger about the same generation.</summary>
    public Task<Workload> RestartAsync(long generationSeen, string reason, DateTimeOffset requestedAt) => Ask(async () =>
    {
        if (generationSeen != _workload.Status.Generation) return Snapshot; // already restarted meanwhile
        if (_workload.Status.Phase == Phase.Pending) return Snapshot;  // a start is under way
        if (_workload.Status.InstanceId.Length > 0 && _tracker.State.StartedAt is { } started && _workload.Status.Generation > 1 &&
            requestedAt - started < _options.ManualRestartCoalesce)
            return Snapshot; // it restarted just before the request: that restart is the one asked for
        var why = reason.Length > 0 ? $"manual: {reason}" : "manual";
        if (_workload.Status.InstanceId.Length > 0)
        {
            var stop = await StopCurrentAsync(why, takeSuccessor: true);
            if (stop == StopOutcome.Unreachable)
                throw PlatformException.Unavailable($"the launcher is unreachable; workload '{Name}' is left as it is");
            if (stop == StopOutcome.Replaced) return Snapshot; // it had just crashed: its successor is the fresh instance asked for
        }
        _tracker.RestartNow();
        await StartAsync(why);
        return Snapshot;
    });

    public Task DeleteAsync() => Ask(async () =>
    {
        // A launch that may have happened without an answer: ask again under the same request id (the launcher
        // answers with that instance, or starts it), so it can be stopped rather than left unsupervised.
        if (_launchPending) await StartAsync("deleting");
        if (_workload.Status.InstanceId.Length > 0 && await StopCurrentAsync("deleted") == StopOutcome.Unreachable)
            throw PlatformException.Unavailable($"the launcher is unreachable; workload '{Name}' is still running and was not deleted");
        _tracker.Stop();
        _store.Delete(Name);
        var previous = _workload.Status.Phase;
        _workload.Status.Phase = Phase.Stopped;
        _workload.Status.Message = "deleted";
        Snapshot = _workload.Clone();
        Publish(previous, Phase.Stopped, "deleted");
        _deleted = true;
        _inbox.Writer.TryComplete();
        await _stop.CancelAsync();
        return true;
    });

    /// <summary>An instance exited (from the Launcher's events), perhaps with the successor armed for it already started.</summary>
    public Task InstanceExited(Instance instance, Instance? successor) => Post(() => HandleExitAsync(instance, "exited", successor));

    /// <summary>The Monitor's verdict on one of this workload's targets turned UNHEALTHY.</summary>
    public Task Unhealthy(long generation, string kind, string detail) => Post(async () =>
    {
        if (generation != _workload.Status.Generation || _workload.Status.InstanceId.Length == 0) return; // about an older instance
        var reason = kind == "heartbeat" ? "heartbeat-timeout" : "unhealthy";
        var stop = await StopCurrentAsync($"{reason}: {detail}", takeSuccessor: true);
        if (stop == StopOutcome.Replaced) return; // it had just exited, and its successor is the restart
        if (stop == StopOutcome.Unreachable)
        {
            Save(_workload.Status.Phase, $"{reason} ({detail}), but the launcher is unreachable: left alone until it is back");
            return;
        }
        _tracker.Exited(failed: true);
        Save(FromTracker(), Describe($"{reason}: {detail}"));
    });

    /// <summary>The Launcher's running instances of this workload, after (re)connecting to its events.</summary>
    public Task Reconcile(List<Instance> running) => Post(() => ReconcileAsync(running));

    /// <summary>Completes once every message posted before it has been handled.</summary>
    public Task FlushAsync() => Ask(() => Task.FromResult(true));

    /// <summary>The Monitor (re)connected: it may have lost this workload's targets.</summary>
    public Task MonitorReconnected() => Post(() =>
    {
        _targetsAdded = false;
        return EnsureTargetsAsync();
    });

    // ------------------------------------------------------------------ the loop

    private async Task RunAsync()
    {
        var token = _stop.Token;
        while (!token.IsCancellationRequested)
        {
            try
            {
                while (!_deleted && _inbox.Reader.TryRead(out var message)) await message();
                if (_deleted) break;
                if (_reconcileAgain && _reconciled) await ResyncAsync();
                if (_reconciled && _tracker.IsDue && _time.GetUtcNow() >= _retryAt) await StartAsync(_workload.Status.Generation == 0 ? "created" : RestartReason());
                if (_tracker.Refresh()) Save(Phase.Running, "running stably; restart count reset");
                if (_workload.Status.InstanceId.Length > 0 && !_targetsAdded) await EnsureTargetsAsync();

                var wake = NextWake();
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(token);
                var delay = wake - _time.GetUtcNow();
                if (delay <= TimeSpan.Zero && _inbox.Reader.Count == 0 && _reconciled && _tracker.IsDue) continue;
                var read = _inbox.Reader.WaitToReadAsync(wait.Token).AsTask();
                if (delay > TimeSpan.Zero)
                {
                    var timer = Task.Delay(delay, _time, wait.Token);
                    await Task.WhenAny(read, timer);
                    await wait.CancelAsync();
                }
                else await read;
                if (read.IsCompletedSuccessfully && !read.Result) break; // inbox completed: deleted
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                _logger.LogError(e, "Workload {Workload}: unexpected error; retrying in 1 s", Name);
                _retryAt = _time.GetUtcNow() + TimeSpan.FromSeconds(1);
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), _time, token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    /// <summary>After the loop: every question still queued is answered (NOT_FOUND once deleted), none left hanging.</summary>
    private async Task DrainAsync()
    {
        _deleted = true;
        while (_inbox.Reader.TryRead(out var message)) await message();
    }

    private DateTimeOffset NextWake()
    {
        var now = _time.GetUtcNow();
        var wake = now + _options.ResyncInterval;
        if (_tracker.NextStartAt is { } next && next < wake) wake = next;
        if (_retryAt > now && _retryAt < wake) wake = _retryAt;
        if (_tracker.State.StartedAt is { } started && _tracker.ConsecutiveFailures > 0 && started + _tracker.Policy.StableAfter is var stable && stable > now && stable < wake) wake = stable;
        return wake;
    }

    private string RestartReason() => _workload.Status.LastExit?.Reason is { Length: > 0 } reason ? reason : "restart";

    // ------------------------------------------------------------------ starting and stopping

    /// <summary>Starts generation N+1 (or retries a pending N). Returns the Launcher's refusal when it refused the
    /// launch spec itself; null otherwise (started, or left pending while the Launcher is unreachable).</summary>
    private async Task<RpcException?> StartAsync(string reason)
    {
        if (_workload.Status.InstanceId.Length > 0) return null; // never two: an instance is current
        if (!_launchPending)
        {
            _workload.Status.Generation++;
            _launchPending = true;
            Save(Phase.Pending, $"starting generation {_workload.Status.Generation} ({reason})");
        }
        var generation = _workload.Status.Generation;
        var (request, span, traceparent) = NewAttempt(generation, reason);
        var headers = new Metadata();
        if (span is null) headers.Add("traceparent", traceparent); // no listener: carry the context by hand

        Instance instance;
        var previous = Activity.Current;
        Activity.Current = span;
        try
        {
            instance = await _deps.CallLauncherAsync(ct => _deps.Launcher.LaunchAsync(request, headers, _time.GetUtcNow().UtcDateTime + _options.CallTimeout, ct).ResponseAsync, _stop.Token);
        }
        catch (Exception e) when (Dependencies.IsUnreachable(e))
        {
            span?.SetStatus(ActivityStatusCode.Error, "launcher unreachable");
            _retryAt = _time.GetUtcNow() + TimeSpan.FromSeconds(2);
            Save(Phase.Pending, $"the launcher is unreachable ({Message(e)}); generation {generation} starts when it is back");
            return null;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && _stop.IsCancellationRequested)
        {
            throw new OperationCanceledException(_stop.Token); // stopping: the launch stays pending (and is retried, fenced)
        }
        catch (RpcException e)
        {
            // The Launcher refused this launch spec: a failed start, with backoff like any failure.
            span?.SetStatus(ActivityStatusCode.Error, e.Status.Detail);
            _launchPending = false;
            _workload.Status.LastExit = new ExitInfo { Time = Timestamp.FromDateTimeOffset(_time.GetUtcNow()), Reason = $"launch failed: {e.Status.Detail}" };
            _tracker.Started();
            _tracker.Exited(failed: true);
            History(generation, "launch-failed", e.Status.Detail);
            Save(FromTracker(), Describe($"launch failed: {e.Status.Detail}"));
            return e;
        }
        finally
        {
            Activity.Current = previous;
            span?.Stop();
        }
        _previousAttempt = traceparent;
        _launchPending = false;
        _workload.Status.InstanceId = instance.Id;
        _workload.Status.Pid = instance.Pid;
        _tracker.Started();
        History(generation, "started", $"{reason}; instance {instance.Id}, pid {instance.Pid}");
        Save(Phase.Running, $"running generation {generation} (pid {instance.Pid})");
        _targetsAdded = false;
        if (instance.State == Instance.Types.State.Exited) await HandleExitAsync(instance, "exited");
        else
        {
            await EnsureTargetsAsync();
            await ArmAsync();
        }
        return null;
    }

    /// <summary>The Launcher request of generation <paramref name="generation"/> and its start span: a span of the
    /// workload's lifecycle trace, linked to the previous attempt, started now (not made current); the child continues it.</summary>
    private (LaunchRequest Request, Activity? Span, string TraceParent) NewAttempt(long generation, string reason)
    {
        var request = new LaunchRequest
        {
            Env = { _workload.Launch.Env },
            Workload = Name,
            Labels = { _workload.Labels },
            // Unique per incarnation of the name (a deleted and re-created workload starts at generation 1 again).
            RequestId = $"supervisor/{Name}/{_lifecycleContext.TraceId.ToHexString()}/{generation}",
            StopGrace = _workload.StopGrace ?? Duration.FromTimeSpan(_options.DefaultStopGrace),
        };
        request.Labels[LabelWorkload] = Name;
        request.Labels[LabelGeneration] = generation.ToString(CultureInfo.InvariantCulture);
        request.Env["PLATFORM_GENERATION"] = generation.ToString(CultureInfo.InvariantCulture);
        if (_workload.Launch.SourceCase == LaunchSpec.SourceOneofCase.Template) request.Template = _workload.Launch.Template;
        else request.Process = _workload.Launch.Process;

        var previous = Activity.Current;
        ActivityLink[] links = _previousAttempt is not null && ActivityContext.TryParse(_previousAttempt, null, out var before) ? [new ActivityLink(before)] : [];
        var span = Source.StartActivity($"supervisor.start {Name}", ActivityKind.Internal, _lifecycleContext,
            [new("workload", Name), new("attempt", generation), new("reason", reason)], links);
        Activity.Current = previous;
        var context = span?.Context ?? new ActivityContext(_lifecycleContext.TraceId, ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded);
        var traceparent = $"00-{context.TraceId.ToHexString()}-{context.SpanId.ToHexString()}-01";
        request.Env["TRACEPARENT"] = traceparent;
        return (request, span, traceparent);
    }

    private enum StopOutcome
    {
        /// <summary>The Launcher cannot be reached: nothing changed (no restart happens blindly).</summary>
        Unreachable,
        /// <summary>No instance is current any more.</summary>
        Stopped,
        /// <summary>The instance had just exited by itself and its armed successor runs: it is the current instance.</summary>
        Replaced,
    }

    /// <summary>Stops the current instance's tree and waits for it. When the instance turns out to have exited by
    /// itself just before, with its armed successor already started: with <paramref name="takeSuccessor"/> (a restart
    /// was wanted anyway) that successor is the restart and stays; otherwise it is stopped too.</summary>
    private async Task<StopOutcome> StopCurrentAsync(string reason, bool takeSuccessor = false)
    {
        while (_workload.Status.InstanceId is { Length: > 0 } id)
        {
            var grace = _workload.StopGrace?.ToTimeSpan() ?? _options.DefaultStopGrace;
            Instance? stopped = null;
            try
            {
                stopped = await _deps.CallLauncherAsync(ct => _deps.Launcher.StopInstanceAsync(new StopInstanceRequest { Id = id, Grace = Duration.FromTimeSpan(grace) },
                    deadline: _time.GetUtcNow().UtcDateTime + grace + _options.CallTimeout, cancellationToken: ct).ResponseAsync, _stop.Token);
            }
            catch (Exception e) when (Dependencies.IsUnreachable(e))
            {
                _logger.LogWarning("Workload {Workload}: cannot stop instance {Instance} ({Reason}): the launcher is unreachable", Name, id, reason);
                return StopOutcome.Unreachable;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
            {
            }
            if (takeSuccessor && stopped is { SuccessorId.Length: > 0 } && await RunningInstanceAsync(stopped.SuccessorId) is { } successor &&
                IsSuccessor(successor, _workload.Status.Generation))
            {
                await HandleExitAsync(stopped, "exited", successor);
                return StopOutcome.Replaced;
            }
            DropArm(); // the launcher starts no successor after a stop it was asked for
            await RemoveTargetsAsync(_workload.Status.Generation);
            _workload.Status.LastExit = Exit(stopped, reason);
            _workload.Status.InstanceId = "";
            _workload.Status.Pid = 0;
            History(_workload.Status.Generation, "stopped", reason);
            // It exited by itself just before the stop and the launcher had already started its armed successor
            // (generation N+1): that one is stopped too, and its generation is used up.
            if (stopped is { SuccessorId.Length: > 0 })
            {
                _workload.Status.Generation++;
                _workload.Status.InstanceId = stopped.SuccessorId;
                reason += " (the successor the launcher started as the instance exited)";
            }
        }
        return StopOutcome.Stopped;
    }

    /// <summary>The instance, if the Launcher knows it and it runs.</summary>
    private async Task<Instance?> RunningInstanceAsync(string id)
    {
        try
        {
            var instance = await _deps.CallLauncherAsync(ct => _deps.Launcher.GetInstanceAsync(new GetInstanceRequest { Id = id },
                deadline: _time.GetUtcNow().UtcDateTime + _options.CallTimeout, cancellationToken: ct).ResponseAsync, _stop.Token);
            return instance.State == Instance.Types.State.Running ? instance : null;
        }
        catch (Exception e) when (e is RpcException or Polly.CircuitBreaker.BrokenCircuitException)
        {
            return null; // then it is stopped like any successor that raced a stop
        }
    }

    private async Task HandleExitAsync(Instance instance, string reason, Instance? successor = null)
    {
        if (instance.Id != _workload.Status.InstanceId) return; // an instance already replaced or stopped on purpose
        var failed = !(instance.HasExitCode && instance.ExitCode == 0);
        var generation = _workload.Status.Generation;
        _workload.Status.LastExit = Exit(instance, reason);
        _workload.Status.InstanceId = "";
        _workload.Status.Pid = 0;
        await RemoveTargetsAsync(generation);
        _tracker.Exited(failed);
        History(generation, "exited", DescribeExit(_workload.Status.LastExit));
        if (successor is not null && IsSuccessor(successor, generation))
        {
            await TakeSuccessorAsync(successor);
            return;
        }
        Save(FromTracker(), Describe(DescribeExit(_workload.Status.LastExit)));
    }

    /// <summary>Whether <paramref name="instance"/> is this workload's generation N+1 (only an armed successor can be:
    /// generation numbers are handed out here, one at a time, and stored before any other launch).</summary>
    private bool IsSuccessor(Instance instance, long generation) =>
        instance.Labels.GetValueOrDefault(LabelWorkload) == Name && GenerationOf(instance.Labels) == generation + 1;

    /// <summary>The generation an instance or a target was made for (its label), or null when it has none.</summary>
    public static long? GenerationOf(IDictionary<string, string> labels) =>
        labels.TryGetValue(LabelGeneration, out var text) && long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var generation) ? generation : null;

    /// <summary>The Launcher started the armed successor the moment the instance exited: it is generation N+1, a
    /// restart like any other (counted, with its start span), unless the policy no longer wants an immediate restart
    /// (changed as the instance exited) — then it is stopped and the policy has its way.</summary>
    private async Task TakeSuccessorAsync(Instance successor)
    {
        var generation = _workload.Status.Generation + 1;
        var traceparent = generation == _armedGeneration ? _armedTraceparent : null;
        _armedTraceparent = null;
        _armedGeneration = 0;
        _workload.Status.Generation = generation;
        _workload.Status.InstanceId = successor.Id;
        _workload.Status.Pid = successor.Pid;
        if (!_tracker.IsDue)
        {
            var exit = _workload.Status.LastExit;
            if (await StopCurrentAsync("started by the launcher, but the restart policy now says wait") == StopOutcome.Stopped)
            {
                _workload.Status.LastExit = exit;
                Save(FromTracker(), Describe(DescribeExit(exit)));
                return;
            }
            // It cannot be stopped now (the launcher is out of reach): it runs, and is the current instance.
        }
        if (traceparent is not null) _previousAttempt = traceparent;
        _tracker.Started();
        History(generation, "started", $"{RestartReason()}; restarted at once by the launcher (armed); instance {successor.Id}, pid {successor.Pid}");
        Save(Phase.Running, $"running generation {generation} (pid {successor.Pid})");
        _targetsAdded = false;
        await EnsureTargetsAsync();
        await ArmAsync();
    }

    /// <summary>
    /// Arms the Launcher to start generation N+1 by itself the moment instance N fails (or exits, under ALWAYS), when
    /// the restart policy would restart it at once anyway (zero backoff, below the limit): a crash is then followed by
    /// a new instance without a round trip through the supervisor. Disarms when the policy no longer says so. A
    /// failure to arm changes nothing: the exit then takes the ordinary path through the supervisor.
    /// </summary>
    private async Task ArmAsync()
    {
        var status = _workload.Status;
        if (!_reconciled || _deleted || status.InstanceId.Length == 0) return;
        var onFailure = _options.ArmSuccessors && _tracker.WouldRestartAtOnce(failed: true);
        if (!onFailure && _armedGeneration == 0) return;
        var request = new ArmSuccessorRequest { InstanceId = status.InstanceId };
        Activity? span = null;
        string? traceparent = null;
        if (onFailure)
        {
            LaunchRequest successor;
            (successor, span, traceparent) = NewAttempt(status.Generation + 1, "exited");
            request.Successor = successor;
            request.OnFailureOnly = !_tracker.WouldRestartAtOnce(failed: false);
        }
        try
        {
            await _deps.CallLauncherAsync(ct => _deps.Launcher.ArmSuccessorAsync(request, deadline: _time.GetUtcNow().UtcDateTime + _options.CallTimeout, cancellationToken: ct).ResponseAsync, _stop.Token);
            _armedGeneration = onFailure ? status.Generation + 1 : 0;
            _armedTraceparent = traceparent;
            // Ended (and so exported) now, not when the successor starts: the successor continues this span's trace
            // as its parent, and this supervisor may be gone by then (a restart of it must not orphan the child).
            span?.SetTag("armed", true);
            span?.Stop();
        }
        catch (Exception e) when (e is RpcException or Polly.CircuitBreaker.BrokenCircuitException && !_stop.IsCancellationRequested)
        {
            // The call may have landed: its successor would name this span as its parent, so it is exported too.
            span?.SetTag("armed", true);
            span?.SetStatus(ActivityStatusCode.Error, Message(e));
            span?.Stop();
            if (_armedGeneration == 0 && e is not RpcException { StatusCode: StatusCode.FailedPrecondition or StatusCode.Unimplemented })
                _armedGeneration = -1; // the call may have landed: disarmed explicitly if the policy changes
            // An older launcher (UNIMPLEMENTED), an instance that exited meanwhile (its EXITED is on its way), or the
            // launcher out of reach (armed again at the reconcile when it is back).
            _logger.LogDebug("Workload {Workload}: no successor armed for instance {Instance}: {Error}", Name, status.InstanceId, Message(e));
        }
    }

    /// <summary>Forgets the armed successor here (the launcher forgets it itself once the instance is stopped).</summary>
    private void DropArm()
    {
        _armedGeneration = 0;
        _armedTraceparent = null;
    }

    /// <summary>Reconciles again from the launcher's running instances of this workload (after a failed reconcile).</summary>
    private async Task ResyncAsync()
    {
        _reconcileAgain = false;
        try
        {
            var page = await _deps.CallLauncherAsync(ct => _deps.Launcher.ListInstancesAsync(new ListInstancesRequest { Workload = Name, State = Instance.Types.State.Running, PageSize = 1000 },
                deadline: _time.GetUtcNow().UtcDateTime + _options.CallTimeout, cancellationToken: ct).ResponseAsync, _stop.Token);
            await ReconcileAsync([.. page.Instances.Where(i => i.Labels.GetValueOrDefault(LabelWorkload) == Name)]);
        }
        catch (Exception e) when (Dependencies.IsUnreachable(e))
        {
            _reconcileAgain = true;
        }
    }

    private async Task ReconcileAsync(List<Instance> running)
    {
        var status = _workload.Status;
        var generation = status.Generation;
        // What the launcher holds for the current instance: an arm it lost (its restart) or one we did not know of (ours).
        if (running.FirstOrDefault(i => i.Id == status.InstanceId) is { } listed)
        {
            if (!listed.SuccessorArmed) DropArm();
            else if (_armedGeneration == 0) _armedGeneration = -1;
        }
        // Strays: running instances of this workload from another generation (a start that was never recorded).
        foreach (var stray in running)
        {
            if (stray.Id == status.InstanceId) continue;
            // Its armed successor: taken below, or by the EXITED that follows it (listed while the exit was being recorded).
            if (status.InstanceId.Length > 0 && IsSuccessor(stray, status.Generation)) continue;
            if (_launchPending && status.InstanceId.Length == 0 && GenerationOf(stray.Labels) == generation) continue; // adopted below
            _logger.LogWarning("Workload {Workload}: stopping stray instance {Instance} (generation {Generation})", Name, stray.Id, stray.Labels.GetValueOrDefault(LabelGeneration));
            try
            {
                await _deps.CallLauncherAsync(ct => _deps.Launcher.StopInstanceAsync(new StopInstanceRequest { Id = stray.Id }, cancellationToken: ct).ResponseAsync, _stop.Token);
            }
            catch (Exception e) when (e is RpcException or Polly.CircuitBreaker.BrokenCircuitException)
            {
                _reconcileAgain = true; // the stray still runs: try again
            }
        }
        if (status.InstanceId.Length > 0 && running.All(i => i.Id != status.InstanceId))
        {
            // It ended while nobody was listening: learn how.
            Instance? ended = null;
            try
            {
                ended = await _deps.CallLauncherAsync(ct => _deps.Launcher.GetInstanceAsync(new GetInstanceRequest { Id = status.InstanceId }, cancellationToken: ct).ResponseAsync, _stop.Token);
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
            {
            }
            catch (Exception e) when (Dependencies.IsUnreachable(e))
            {
                _reconcileAgain = true;
                _reconciled = true; // starts stay impossible while an instance is current
                return;
            }
            if (ended is null || ended.State == Instance.Types.State.Exited)
                await HandleExitAsync(ended ?? new Instance { Id = status.InstanceId, State = Instance.Types.State.Exited }, ended is null ? "gone (the launcher has no record)" : "exited",
                    running.FirstOrDefault(i => IsSuccessor(i, status.Generation)));
        }
        else if (_launchPending && running.FirstOrDefault(i => GenerationOf(i.Labels) == generation) is { } launched)
        {
            // The launch of generation N happened but was not recorded before the supervisor stopped: adopt it.
            _launchPending = false;
            status.InstanceId = launched.Id;
            status.Pid = launched.Pid;
            _tracker.Started();
            History(status.Generation, "adopted", $"instance {launched.Id}");
            Save(Phase.Running, $"running generation {status.Generation} (pid {launched.Pid}, adopted)");
        }
        else if (status.InstanceId.Length > 0 && !_reconciled)
        {
            History(status.Generation, "adopted", $"instance {status.InstanceId}");
            Save(status.Phase, status.Message);
        }
        _reconciled = true;
        // A restarted launcher has forgotten its arms, a restarted supervisor its own: armed again unless in place.
        if (running.FirstOrDefault(i => i.Id == status.InstanceId) is not { SuccessorArmed: true } || _armedGeneration != status.Generation + 1) await ArmAsync();
    }

    // ------------------------------------------------------------------ monitor targets

    private async Task EnsureTargetsAsync()
    {
        if (_targetsAdded || _workload.Status.InstanceId.Length == 0) return;
        var targets = Targets();
        try
        {
            if (targets.Count > 0) _targetsGeneration = _workload.Status.Generation;
            foreach (var target in targets)
                await _deps.CallMonitorAsync(ct => _deps.Monitor.AddTargetAsync(new AddTargetRequest { Target = target }, deadline: _time.GetUtcNow().UtcDateTime + _options.CallTimeout, cancellationToken: ct).ResponseAsync, _stop.Token);
            _targetsAdded = true;
        }
        catch (Exception e) when (Dependencies.IsUnreachable(e))
        {
            // Degraded: health verdicts are missing until the monitor is back (retried at the next resync).
        }
        catch (RpcException e)
        {
            _targetsAdded = true; // the monitor refused the probe spec: say so, do not retry every resync
            Save(_workload.Status.Phase, $"running, but the monitor refused the health probe: {e.Status.Detail}");
        }
    }

    private List<Target> Targets()
    {
        var list = new List<Target>();
        var prefix = $"{TargetPrefix}{Name}/{_workload.Status.Generation}";
        var health = _workload.Health;
        if (health?.Probe is { } probe)
        {
            var target = probe.Clone();
            target.Id = prefix + "/health";
            target.Workload = Name;
            if (target.ProbeCase == Target.ProbeOneofCase.Process && target.Process.Pid == 0) target.Process.Pid = _workload.Status.Pid;
            list.Add(Own(target, "health"));
        }
        var timeout = health?.HeartbeatTimeout?.ToTimeSpan() ?? WorkloadValidation.DefaultHeartbeatTimeout;
        if (timeout > TimeSpan.Zero && health?.HeartbeatFile is { Length: > 0 } file)
        {
            var interval = TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 4, TimeSpan.FromMilliseconds(100).Ticks, TimeSpan.FromSeconds(10).Ticks));
            list.Add(Own(new Target
            {
                Id = prefix + "/heartbeat",
                Workload = Name,
                Interval = Duration.FromTimeSpan(interval),
                FailureThreshold = 1,
                HeartbeatFile = new HeartbeatFileProbe { Path = file, MaxAge = Duration.FromTimeSpan(timeout) },
            }, "heartbeat"));
        }
        return list;
    }

    /// <summary>Labels a target as this workload's, of the current generation: its verdicts find their way back by them.</summary>
    private Target Own(Target target, string check)
    {
        target.Labels[LabelWorkload] = Name;
        target.Labels[LabelGeneration] = _workload.Status.Generation.ToString(CultureInfo.InvariantCulture);
        target.Labels[LabelCheck] = check;
        return target;
    }

    /// <summary>Drops the monitor's targets of a generation, in the background: nothing waits for it (a restart must
    /// not), and a verdict that still arrives about that generation is ignored anyway.</summary>
    private Task RemoveTargetsAsync(long generation)
    {
        _targetsAdded = false;
        if (_targetsGeneration != generation) return Task.CompletedTask;
        _targetsGeneration = 0;
        _ = RemoveTargetsInBackgroundAsync(generation);
        return Task.CompletedTask;
    }

    private async Task RemoveTargetsInBackgroundAsync(long generation)
    {
        foreach (var kind in new[] { "health", "heartbeat" })
        {
            try
            {
                await _deps.CallMonitorAsync(ct => _deps.Monitor.RemoveTargetAsync(new RemoveTargetRequest { TargetId = $"{TargetPrefix}{Name}/{generation}/{kind}" },
                    deadline: _time.GetUtcNow().UtcDateTime + _options.CallTimeout, cancellationToken: ct).ResponseAsync, _stop.Token);
            }
            catch (Exception e) when (e is RpcException or Polly.CircuitBreaker.BrokenCircuitException or OperationCanceledException)
            {
                // Not there, or the monitor is down (it then forgets it anyway).
            }
        }
    }

    // ------------------------------------------------------------------ state

    private Phase FromTracker() => _tracker.Phase switch
    {
        RestartPhase.Pending => Phase.Pending,
        RestartPhase.Running => Phase.Running,
        RestartPhase.BackingOff => Phase.BackingOff,
        RestartPhase.CoolingOff => Phase.CoolingOff,
        RestartPhase.Stopped => Phase.Stopped,
        _ => Phase.Failed,
    };

    private string Describe(string what) => _tracker.Phase switch
    {
        RestartPhase.BackingOff => $"{what}; restarting in {(_tracker.NextStartAt!.Value - _time.GetUtcNow()).TotalSeconds:0.###}s (restart {_tracker.RestartCount} of {_tracker.Policy.MaxRestarts} within {_tracker.Policy.RestartWindow})",
        RestartPhase.CoolingOff => $"{what}; {_tracker.RestartCount} restarts within {_tracker.Policy.RestartWindow}: cooling off until {_tracker.NextStartAt:HH:mm:ss}",
        RestartPhase.Stopped => $"{what}; not restarted (policy {_tracker.Policy.Mode})",
        RestartPhase.Failed => $"{what}; not restarted (policy {_tracker.Policy.Mode})",
        _ => what,
    };

    private readonly List<(long Generation, DateTimeOffset Time, string Event, string Detail)> _history = [];

    /// <summary>A line of history, written with the next <see cref="Save"/> in the same transaction.</summary>
    private void History(long generation, string what, string detail) => _history.Add((generation, _time.GetUtcNow(), what, detail));

    private void Save(Phase phase, string message)
    {
        if (_deleted) return;
        var previous = Snapshot.Status.Phase;
        var s = _workload.Status;
        s.Phase = phase;
        s.Message = message;
        s.RestartCount = _tracker.RestartCount;
        s.TotalRestarts = _tracker.TotalRestarts;
        s.NextRestartTime = _tracker.NextStartAt is { } next && phase is Phase.BackingOff or Phase.CoolingOff ? Timestamp.FromDateTimeOffset(next) : null;
        s.TraceId = _lifecycleContext.TraceId.ToHexString();
        _workload.Revision = _store.NextRevision();
        _store.Put(new WorkloadRecord(_workload, _tracker.State, _lifecycle, _previousAttempt), _history);
        _history.Clear();
        Snapshot = _workload.Clone();
        if (phase != previous) Publish(previous, phase, message);
    }

    private void Publish(Phase previous, Phase phase, string message)
    {
        _logger.LogInformation("Workload {Workload}: {Previous} -> {Phase}: {Message}", Name, previous, phase, message);
        _publish(Snapshot, previous);
    }

    private ExitInfo Exit(Instance? instance, string reason)
    {
        var info = new ExitInfo { Time = instance?.ExitTime ?? Timestamp.FromDateTimeOffset(_time.GetUtcNow()), Reason = reason };
        if (instance is { HasExitCode: true }) info.ExitCode = instance.ExitCode;
        if (instance is { HasSignal: true }) info.Signal = instance.Signal;
        return info;
    }

    private static string DescribeExit(ExitInfo exit) =>
        exit.HasExitCode ? $"{exit.Reason} with code {exit.ExitCode}" : exit.HasSignal ? $"{exit.Reason} by signal {exit.Signal}" : exit.Reason;

    private static string Message(Exception e) => e is RpcException r ? $"{r.StatusCode}: {r.Status.Detail}" : e.Message;

    public async Task StopAsync()
    {
        _inbox.Writer.TryComplete();
        await _stop.CancelAsync();
        try
        {
            await _loop.WaitAsync(TimeSpan.FromSeconds(5));
        }
        catch (Exception e) when (e is TimeoutException or OperationCanceledException)
        {
        }
    }

    /// <summary>A new workload's record: generation 0, pending, with a fresh lifecycle trace (a root span of its own).</summary>
    public static WorkloadRecord Create(Workload spec, DateTimeOffset now, long revision)
    {
        var previous = Activity.Current;
        Activity.Current = null;
        string lifecycle;
        using (var root = Source.StartActivity($"supervisor.workload {spec.Name}", ActivityKind.Internal, default(ActivityContext)))
        {
            var context = root?.Context ?? new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded);
            lifecycle = $"00-{context.TraceId.ToHexString()}-{context.SpanId.ToHexString()}-01";
        }
        Activity.Current = previous;
        var workload = spec.Clone();
        workload.CreateTime = workload.UpdateTime = Timestamp.FromDateTimeOffset(now);
        workload.Revision = revision;
        workload.Status = new WorkloadStatus
        {
            Phase = Phase.Pending,
            Message = "created",
            TraceId = ActivityContext.Parse(lifecycle, null).TraceId.ToHexString(),
        };
        return new WorkloadRecord(workload, RestartState.Initial, lifecycle, null);
    }
}
