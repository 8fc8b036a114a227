using System.Globalization;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;
using Platform.Launcher.V1;
using RestartPhase = Platform.Restarts.RestartPhase;
using RestartState = Platform.Restarts.RestartState;
using Platform.Supervisor.Core;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Tests.Core;

/// <summary>What happens next in a property case: a message, a change in the world, or time passing.</summary>
public abstract record Op
{
    public sealed record Tick : Op;
    public sealed record Advance(int Milliseconds) : Op;
    /// <summary>The running instance exits by itself.</summary>
    public sealed record Crash(int ExitCode) : Op;
    /// <summary>The next EXITED the Launcher published reaches the Supervisor.</summary>
    public sealed record Deliver : Op;
    /// <summary>An EXITED delivered before arrives again (a duplicate, usually stale).</summary>
    public sealed record Redeliver(int Index) : Op;
    /// <summary>An UNHEALTHY verdict on the current generation, or on the one before.</summary>
    public sealed record Verdict(bool Stale, bool Heartbeat) : Op;
    /// <summary>A restart by hand, by someone who saw the current generation, or the one before.</summary>
    public sealed record Restart(bool Stale) : Op;
    /// <summary>A new spec: the policy, and launch A, B or one the Launcher refuses.</summary>
    public sealed record Apply(PolicyCase Policy, int Launch) : Op;
    public sealed record Delete : Op;
    public sealed record Flush : Op;
    /// <summary>The Supervisor is killed and started again: state from its store, events not yet delivered lost.</summary>
    public sealed record SupervisorRestart : Op;
    /// <summary>The Launcher restarts (arms forgotten, children kept): events lost, the Supervisor reconciles.</summary>
    public sealed record LauncherRestart : Op;
    public sealed record MonitorReconnect : Op;
}

/// <summary>How the next call goes.</summary>
public enum Fault
{
    Ok,
    /// <summary>Not reached: no effect, an UNAVAILABLE.</summary>
    Unreachable,
    /// <summary>Done, but the answer is lost (DEADLINE_EXCEEDED).</summary>
    Lost,
    /// <summary>The Supervisor dies just before the call.</summary>
    CrashBefore,
    /// <summary>The Supervisor dies just after the call took effect.</summary>
    CrashAfter,
    /// <summary>The running instance exits by itself (code 1) just before the call reaches the Launcher.</summary>
    ExitFirst,
}

/// <summary>A restart policy, small enough to print.</summary>
public sealed record PolicyCase(RestartPolicy.Types.Mode Mode, int InitialMs, double Multiplier, int MaxRestarts, int StableMs, double Jitter)
{
    public RestartPolicy ToProto() => new()
    {
        Mode = Mode,
        InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(InitialMs)),
        Multiplier = Multiplier,
        MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(Math.Max(InitialMs, 1) * 8)),
        MaxRestarts = MaxRestarts,
        RestartWindow = Duration.FromTimeSpan(TimeSpan.FromSeconds(10)),
        Cooloff = Duration.FromTimeSpan(TimeSpan.FromSeconds(3)),
        StableAfter = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(StableMs)),
        Jitter = Jitter,
    };
}

/// <summary>
/// The executor the property test puts around <see cref="WorkloadCore.Decide"/>, as <see cref="WorkloadActor"/> is in
/// the service: one message at a time, the actions in order, each call answered by the <see cref="LauncherModel"/> (or
/// by a fault) and fed back, a store of one record, and a Supervisor that can die at any call. After every decision it
/// checks the properties the Supervisor promises; a violation throws, naming it.
/// </summary>
internal sealed class CoreRunner
{
    private const string Name = "agent";
    private static readonly DateTimeOffset T0 = new(2026, 12, 2, 0, 0, 0, TimeSpan.Zero);
    private static readonly SupervisorOptions Options = new();

    private readonly FakeTimeProvider _time = new(T0);
    private readonly LauncherModel _world;
    private readonly Queue<Fault> _faults;
    private readonly string _lifecycle;
    private readonly HashSet<long> _waiting = [];
    private readonly Dictionary<string, long> _requestGenerations = [];
    private readonly HashSet<long> _launched = [];
    private WorkloadState? _state;
    private WorkloadRecord? _persisted;
    private int _delivered;
    private long _nextCaller;
    private bool _deletedForGood;
    private readonly List<string> _trace = [];

    private sealed class SupervisorKilled : Exception;

    public CoreRunner(PolicyCase policy, IEnumerable<Fault> faults, int seed, bool launcherIgnoresRequestIds = false)
    {
        _world = new LauncherModel(launcherIgnoresRequestIds);
        _faults = new Queue<Fault>(faults);
        var random = new Random(seed);
        _lifecycle = $"00-{random.NextInt64():x16}{random.NextInt64():x16}-{random.NextInt64():x16}-01";
        var workload = new Workload
        {
            Name = Name,
            Launch = Launch(0),
            RestartPolicy = policy.ToProto(),
            Health = new HealthPolicy { HeartbeatFile = "/tmp/agent.heartbeat", HeartbeatTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(5)) },
            CreateTime = Timestamp.FromDateTimeOffset(T0),
            UpdateTime = Timestamp.FromDateTimeOffset(T0),
            Status = new WorkloadStatus { Phase = Phase.Pending, Message = "created" },
        };
        // As the engine does: the record is stored, then the first start is asked for (and answered).
        _persisted = new WorkloadRecord(workload, RestartState.Initial, _lifecycle, null);
        _state = WorkloadState.Load(_persisted, reconciled: true);
        Guarded(() => Message(new CoreEvent.FirstStart()));
    }

    private static LaunchSpec Launch(int variant) => variant switch
    {
        0 => new LaunchSpec { Process = new ProcessSpec { Executable = "/bin/sleep", Args = { "infinity" } } },
        1 => new LaunchSpec { Template = "agent" },
        _ => new LaunchSpec { Template = LauncherModel.UnknownTemplate },
    };

    private long Generation => _state?.Workload.Status.Generation ?? 0;

    public void Run(Op op)
    {
        _trace.Add($"{op}");
        switch (op)
        {
            case Op.Tick: Guarded(() => Handle(new CoreEvent.Tick())); break;
            case Op.Advance a: _time.Advance(TimeSpan.FromMilliseconds(a.Milliseconds)); break;
            case Op.Crash c: _world.Crash(Name, c.ExitCode); break;
            case Op.Deliver when _delivered < _world.Published.Count:
                var next = _world.Published[_delivered++];
                Guarded(() => Handle(next));
                break;
            case Op.Redeliver r when _delivered > 0:
                var again = _world.Published[r.Index % _delivered];
                Guarded(() => Handle(again));
                break;
            case Op.Verdict v:
                Guarded(() => Handle(new CoreEvent.Unhealthy(Generation - (v.Stale ? 1 : 0), v.Heartbeat ? "heartbeat" : "health", "probe failed")));
                break;
            case Op.Restart r:
                Guarded(() => Message(new CoreEvent.RestartRequested(Generation - (r.Stale ? 1 : 0), "by hand", _time.GetUtcNow())));
                break;
            case Op.Apply a when _state is not null:
                var spec = _state.Snapshot.Clone();
                spec.Status = null;
                spec.RestartPolicy = a.Policy.ToProto();
                spec.Launch = Launch(a.Launch);
                Guarded(() => Message(new CoreEvent.Applied(spec)));
                break;
            case Op.Delete: Guarded(() => Message(new CoreEvent.DeleteRequested())); break;
            case Op.Flush: Guarded(() => Message(new CoreEvent.Flush())); break;
            case Op.SupervisorRestart: Guarded(() => throw new SupervisorKilled()); break;
            case Op.LauncherRestart:
                _world.Restart();
                Reconnected();
                break;
            case Op.MonitorReconnect: Guarded(() => Handle(new CoreEvent.MonitorReconnected())); break;
        }
        CheckWorld();
    }

    /// <summary>The Supervisor reconnects to the Launcher's events: those published meanwhile are lost; it lists instead.</summary>
    private void Reconnected()
    {
        _delivered = _world.Published.Count;
        Guarded(() => Handle(new CoreEvent.Reconciled(_world.Running(Name))));
    }

    /// <summary>Runs <paramref name="work"/>; if the Supervisor is killed meanwhile, starts it again from its store (as
    /// many times as it is killed).</summary>
    private void Guarded(Action work)
    {
        try
        {
            work();
        }
        catch (SupervisorKilled)
        {
            _trace.Add("  the supervisor is killed and started again");
            // Whoever waited for an answer sees the connection drop.
            _waiting.Clear();
            _state = _persisted is null ? null : WorkloadState.Load(_persisted, reconciled: false);
            if (_state is not null) Reconnected();
        }
    }

    /// <summary>A message with a caller, who must be answered exactly once by the time it is handled.</summary>
    private void Message(CoreEvent e)
    {
        if (_state is null) return; // deleted and gone from the store: the engine answers NOT_FOUND itself
        var caller = ++_nextCaller;
        _waiting.Add(caller);
        Handle(e with { Caller = caller });
        Check(!_waiting.Contains(caller), $"{e.GetType().Name} was handled without an answer to its caller");
    }

    /// <summary>One message to its end, as the executor does it.</summary>
    private void Handle(CoreEvent e)
    {
        if (_state is null) return;
        while (true)
        {
            var before = _state;
            var now = _time.GetUtcNow();
            var (state, actions) = WorkloadCore.Decide(before, e, now, Options);
            _state = state;
            var rs = state.Restart;
            _trace.Add($"  +{(now - T0).TotalMilliseconds}ms {Describe(e)} -> generation {state.Workload.Status.Generation} {state.Workload.Status.Phase} " +
                $"instance '{state.Workload.Status.InstanceId}' pending={state.LaunchPending}; policy {rs.Phase} failures {rs.ConsecutiveFailures} recent {rs.RecentRestarts.Count} next {(rs.NextStartAt - T0)?.TotalMilliseconds}; " +
                string.Join(", ", actions.Select(a => a.GetType().Name)));
            Call? call = null;
            foreach (var action in actions)
            {
                switch (action)
                {
                    case Call c: call = c; break;
                    case WorkloadAction.Persist p: _persisted = p.Record with { Workload = p.Record.Workload.Clone() }; break;
                    case WorkloadAction.DeleteRecord: _persisted = null; break;
                    case WorkloadAction.Reply r:
                        Check(_waiting.Remove(r.Caller), $"caller {r.Caller} answered twice, or never asked");
                        if (state.Deleted && !before.Deleted && r.Error is null) _deletedForGood = true; // the delete was answered: done
                        break;
                }
            }
            CheckDecision(before, state, now, call);
            if (call is null) return;
            e = Answer(call, state);
        }
    }

    private CoreEvent.CallResult Answer(Call call, WorkloadState state)
    {
        var fault = _faults.Count > 0 ? _faults.Dequeue() : Fault.Ok;
        if (fault != Fault.Ok) _trace.Add($"  {call.GetType().Name}: {fault}");
        if (fault == Fault.CrashBefore) throw new SupervisorKilled();
        if (fault == Fault.Unreachable) return Failed(StatusCode.Unavailable, "connection refused");
        if (fault == Fault.ExitFirst && call is not (Call.AddTarget or Call.RemoveTargetsAndWait)) _world.Crash(Name, 1);
        CoreEvent.CallResult result;
        try
        {
            result = call switch
            {
                Call.Launch l => Launched(l, state),
                Call.StopInstance s => new(Instance: _world.Stop(s.Id)),
                Call.GetInstance g => new(Instance: _world.GetInstance(g.Id)),
                Call.ArmSuccessor a => Armed(a, state),
                Call.ListInstances => new(Instances: _world.Running(Name)),
                _ => new(), // the Monitor: targets added and removed
            };
        }
        catch (RpcException e)
        {
            result = Failed(e.StatusCode, e.Status.Detail, unreachable: false);
        }
        return fault switch
        {
            Fault.CrashAfter => throw new SupervisorKilled(),
            Fault.Lost => Failed(StatusCode.DeadlineExceeded, "deadline exceeded"),
            _ => result,
        };
    }

    private static CoreEvent.CallResult Failed(StatusCode code, string detail, bool unreachable = true) =>
        new(Error: new CallError(unreachable, code, detail, $"{code}: {detail}"));

    private CoreEvent.CallResult Launched(Call.Launch l, WorkloadState state)
    {
        var generation = WorkloadCore.GenerationOf(l.Request.Labels);
        Check(!state.Deleted, "a launch for a deleted workload");
        Check(state.Workload.Status.InstanceId.Length == 0, $"a launch while instance {state.Workload.Status.InstanceId} is current");
        Check(generation == state.Workload.Status.Generation, $"launch labelled generation {generation}, state at {state.Workload.Status.Generation}");
        Check(_persisted is not null && _persisted.Workload.Status.Generation == generation && _persisted.Workload.Status.InstanceId.Length == 0,
            $"generation {generation} launched before it was stored (store has {_persisted?.Workload.Status.Generation})");
        var tracker = state.Restart;
        Check(tracker.Phase == RestartPhase.Pending || (tracker.Phase is RestartPhase.BackingOff or RestartPhase.CoolingOff && tracker.NextStartAt <= _time.GetUtcNow()),
            $"a launch while the policy says {tracker.Phase} until {tracker.NextStartAt:HH:mm:ss.fff} (now {_time.GetUtcNow():HH:mm:ss.fff})");
        Fenced(l.Request);
        // The first launch of a generation finds it unused: a successor the Launcher started under it would answer instead.
        if (_launched.Add(generation ?? -1))
            Check(!_world.StartedGenerations.Contains(generation ?? -1), $"generation {generation} launched, but the Launcher already started it (as an armed successor)");
        var live = _world.Running(Name).Where(i => WorkloadCore.GenerationOf(i.Labels) != generation).ToList();
        Check(live.Count == 0, $"generation {generation} launched while instance {live.FirstOrDefault()?.Id} (generation {live.FirstOrDefault()?.Labels[WorkloadLabels.Generation]}) runs");
        return new(Instance: _world.Launch(l.Request), TraceParent: $"00-{new string('a', 32)}-{generation:x16}-01");
    }

    private CoreEvent.CallResult Armed(Call.ArmSuccessor a, WorkloadState state)
    {
        Check(!state.Deleted, "a successor armed for a deleted workload");
        if (a.Request.Successor is { } successor)
        {
            Check(WorkloadCore.GenerationOf(successor.Labels) == state.Workload.Status.Generation + 1, "a successor armed with a generation other than the next");
            Fenced(successor);
        }
        _world.ArmSuccessor(a.Request);
        return new(TraceParent: a.Span is null ? null : $"00-{new string('b', 32)}-{state.Workload.Status.Generation + 1:x16}-01");
    }

    /// <summary>A request id always means the same generation, and a generation always the same request id.</summary>
    private void Fenced(LaunchRequest request)
    {
        var generation = WorkloadCore.GenerationOf(request.Labels) ?? -1;
        if (_requestGenerations.TryGetValue(request.RequestId, out var known))
            Check(known == generation, $"request id {request.RequestId} used for generations {known} and {generation}");
        else
        {
            Check(_requestGenerations.Values.All(g => g != generation), $"generation {generation} requested under two request ids");
            _requestGenerations[request.RequestId] = generation;
        }
    }

    /// <summary>The restart policy's promises about one decision.</summary>
    private void CheckDecision(WorkloadState before, WorkloadState after, DateTimeOffset now, Call? call)
    {
        var policy = WorkloadValidation.ToPolicy(after.Workload.RestartPolicy);
        var p = before.Restart;
        var s = after.Restart;
        Check(s.TotalRestarts >= p.TotalRestarts, "the total restart count went down");
        Check(after.Workload.Status.Generation >= before.Workload.Status.Generation, "the generation went down");
        var since = now - policy.RestartWindow;
        var stableRun = p.Phase == RestartPhase.Running && p.StartedAt is { } began && now - began >= policy.StableAfter;
        // A stable run, or a start after a cool-off (a refused launch is a start and an exit in one decision), starts the count afresh.
        var afresh = stableRun || p.Phase == RestartPhase.CoolingOff;
        var added = s.RecentRestarts.Count(t => t == now) - (afresh ? 0 : p.RecentRestarts.Count(t => t == now));
        var counted = afresh ? 0 : p.RecentRestarts.Count(t => t > since);
        if (added > 0)
            Check(counted < policy.MaxRestarts, $"a restart counted with {counted} already in the window (limit {policy.MaxRestarts})");
        if (s.Phase == RestartPhase.CoolingOff && (p.Phase != RestartPhase.CoolingOff || s.NextStartAt != p.NextStartAt))
        {
            Check(s.RecentRestarts.Count(t => t > since) >= policy.MaxRestarts, $"a cool-off with {s.RecentRestarts.Count(t => t > since)} restarts in the window (limit {policy.MaxRestarts})");
            Check(s.NextStartAt == now + policy.Cooloff, $"a cool-off until {s.NextStartAt:HH:mm:ss.fff}, not {policy.Cooloff} from now");
        }
        if (s.Phase == RestartPhase.BackingOff && (p.Phase != RestartPhase.BackingOff || s.NextStartAt != p.NextStartAt))
        {
            var backoff = policy.BackoffAfter(s.ConsecutiveFailures);
            var wait = s.NextStartAt - now;
            Check(wait >= backoff && wait <= backoff + TimeSpan.FromTicks((long)(backoff.Ticks * policy.Jitter)) + TimeSpan.FromTicks(1),
                $"backing off {wait} after {s.ConsecutiveFailures} failures; the policy says {backoff} (jitter {policy.Jitter})");
        }
        if (s.ConsecutiveFailures < p.ConsecutiveFailures)
            Check(p.Phase == RestartPhase.CoolingOff || stableRun,
                $"the failure count reset from {p.ConsecutiveFailures} to {s.ConsecutiveFailures} without a stable run or a spent cool-off ({p.Phase}, started {p.StartedAt:HH:mm:ss.fff}, now {now:HH:mm:ss.fff})");
        if (call is null) Check(after.Todo.Count == 0 && !after.Waiting, "the core waits with no call made");
        // The actor ticks again at once when something the clock scheduled is due (WakeDue), else sleeps until NextWake:
        // a wake not after now with nothing due would leave it waiting for a message.
        if (call is null && !after.Deleted && !WorkloadCore.WakeDue(after, now))
            Check(WorkloadCore.NextWake(after, now, Options) > now, $"the next wake {WorkloadCore.NextWake(after, now, Options):HH:mm:ss.fff} is not after now {now:HH:mm:ss.fff}");
    }

    /// <summary>What must hold of the world after every step.</summary>
    private void CheckWorld()
    {
        var running = _world.Running(Name);
        Check(running.Count <= 1, $"two instances run: {string.Join(", ", running.Select(i => $"{i.Id} (generation {i.Labels[WorkloadLabels.Generation]})"))}");
        var started = _world.StartedGenerations;
        for (var i = 1; i < started.Count; i++)
            Check(started[i] > started[i - 1], $"generation {started[i]} started after generation {started[i - 1]}");
        if (_deletedForGood)
        {
            Check(_persisted is null, "a deleted workload is still stored");
            Check(running.Count == 0, $"a deleted workload still runs instance {running.FirstOrDefault()?.Id}");
        }
    }

    private static string Describe(CoreEvent e) => e switch
    {
        CoreEvent.CallResult { Error: { } error } => $"error {error.Code}",
        CoreEvent.CallResult { Instance: { } i } => $"answer {i.Id} {i.State} successor '{i.SuccessorId}'",
        CoreEvent.CallResult { Instances: { } list } => $"answer [{string.Join(", ", list.Select(i => i.Id))}]",
        CoreEvent.CallResult => "answer",
        CoreEvent.Exited x => $"exited {x.Instance.Id} code {(x.Instance.HasExitCode ? x.Instance.ExitCode : -1)} successor {x.Successor?.Id}",
        CoreEvent.Reconciled r => $"reconciled [{string.Join(", ", r.Running.Select(i => i.Id))}]",
        _ => e.GetType().Name,
    };

    /// <summary>Fails with what was violated and the decisions that led to it.</summary>
    private void Check(bool condition, string what)
    {
        if (!condition) throw new PropertyViolation($"{what}\n{string.Join("\n", _trace.TakeLast(60))}");
    }
}

public sealed class PropertyViolation(string message) : Exception(message);
