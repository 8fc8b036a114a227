using System.Diagnostics;
using System.Globalization;
using Google.Protobuf.WellKnownTypes;
using Microsoft.Extensions.Logging;
using Platform.Launcher.V1;
using Platform.Restarts;
using Platform.ServiceDefaults;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Core;

/// <summary>
/// The Supervisor's decisions about one workload, as a pure function: <see cref="Decide"/> takes the workload's state,
/// one event and the time, and returns the next state and the actions to run. No I/O, no clock, no randomness of its
/// own, no gRPC exception: the executor (<see cref="WorkloadActor"/>) runs the actions in order and feeds the result of
/// the call that ends them back as the next event before it takes another message, so the messages of a workload are
/// handled one at a time, each to its end.
///
/// A message becomes a list of steps (<see cref="WorkloadState.Todo"/>); a step either decides at once or issues one
/// call and waits, at the head of the list, for its result. Never two instances: a start happens only when no instance
/// is current, a restart stops the old tree (and waits for it) first, and a trigger that names a generation already
/// replaced is dropped. Every start carries a fencing number (the generation), stored before the launch and used in the
/// Launcher's request id, so a repeated start is answered with the first instance, never a second one.
/// </summary>
public static partial class WorkloadCore
{
    public static (WorkloadState State, IReadOnlyList<WorkloadAction> Actions) Decide(WorkloadState state, CoreEvent e, DateTimeOffset now, SupervisorOptions options, IPlacement? nodes = null)
    {
        var turn = new Turn(state, now, options, nodes ?? SingleLauncher.Instance);
        turn.Handle(e);
        turn.Pump();
        return (turn.Build(), turn.Actions);
    }

    /// <summary>When the workload next needs a <see cref="CoreEvent.Tick"/> with nothing else happening.</summary>
    public static DateTimeOffset NextWake(WorkloadState state, DateTimeOffset now, SupervisorOptions options)
    {
        // Quiet (reconciled, nothing to retry, its targets with the monitor): a tick would do nothing but look, so the
        // workload has no timer of its own (DateTimeOffset.MaxValue: it waits for a message). Every time-driven step
        // below still wakes it when due, and the engine looks at all workloads together every QuietResyncInterval
        // (one schedule, not one timer per workload: at rest 300 of them wake the supervisor once in 5 minutes, not
        // once a second).
        var quiet = state.Reconciled && !state.ReconcileAgain && !state.LaunchPending &&
            (state.TargetsAdded || state.Workload.Status.InstanceId.Length == 0);
        var wake = quiet ? DateTimeOffset.MaxValue : now + options.ResyncInterval;
        var tracker = Tracker(state, now);
        // A start waits for RetryAt too (a launcher out of reach): due then, not now, or the loop would wait for a message.
        if (tracker.NextStartAt is { } next && next < wake) wake = next > state.RetryAt ? next : state.RetryAt;
        if (state.RetryAt > now && state.RetryAt < wake) wake = state.RetryAt;
        // A start held back by RetryAt (a launcher out of reach, no node to place it on yet) counts even when already
        // due, as the scheduled steps below do: a tick a moment before RetryAt did not start it, and the loop, reading
        // the clock again just after, must tick again at once (StartDue), not sleep until the quiet resync (5 min).
        // NodeTests found it: a workload no node fitted stayed PENDING after a node came to fit it.
        if (state.RetryAt != default && state.RetryAt <= now && state.Workload.Status.InstanceId.Length == 0 && StartDue(state, now)) wake = state.RetryAt;
        // Scheduled steps count even when already due: a tick that read the clock a moment before one came due (a timer
        // fires up to a millisecond early) did not take it, and the loop, reading the clock again just after, must tick
        // again at once (WakeDue), not sleep until the next resync. Dropping a due ArmAt here left generations
        // restarted by the supervisor unarmed for minutes (ImmediateRestartTests, about one run in three).
        if (state.ArmAt != default && state.ArmAt < wake) wake = state.ArmAt;
        if (!state.TargetsAdded && state.TargetsRetryAt != default && state.TargetsRetryAt < wake) wake = state.TargetsRetryAt;
        if (tracker.State.StartedAt is { } started && (tracker.ConsecutiveFailures > 0 || tracker.State.RecentRestarts.Count > 0) &&
            started + tracker.Policy.StableAfter is var stable && stable > now && stable < wake) wake = stable;
        return wake;
    }

    /// <summary>A tick now would do something the clock scheduled: a start, an arm, or adding refused targets again.</summary>
    public static bool WakeDue(WorkloadState state, DateTimeOffset now) =>
        StartDue(state, now) ||
        (state.ArmAt != default && now >= state.ArmAt) ||
        (!state.TargetsAdded && state.TargetsRetryAt != default && now >= state.TargetsRetryAt);

    /// <summary>A start is due now (a tick would start one).</summary>
    public static bool StartDue(WorkloadState state, DateTimeOffset now) =>
        state.Reconciled && !state.Deleted && Tracker(state, now).IsDue && now >= state.RetryAt;

    /// <summary>The restart policy's state machine on the state's policy, at <paramref name="now"/>. Its jitter is drawn
    /// from the workload's lifecycle id and restart count: the same inputs decide the same way.</summary>
    private static RestartTracker Tracker(WorkloadState state, DateTimeOffset now) =>
        new(WorkloadValidation.ToPolicy(state.Workload.RestartPolicy), new FixedClock(now), state.Restart,
            new Random(StableHash(state.Lifecycle) ^ (int)state.Restart.TotalRestarts * 397 ^ state.Restart.ConsecutiveFailures));

    private static int StableHash(string text)
    {
        var hash = unchecked((int)2166136261);
        foreach (var c in text) hash = unchecked((hash ^ c) * 16777619);
        return hash;
    }

    private sealed class FixedClock(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }

    /// <summary>The generation an instance or a target was made for (its label), or null when it has none.</summary>
    public static long? GenerationOf(IDictionary<string, string> labels) =>
        labels.TryGetValue(WorkloadLabels.Generation, out var text) && long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var generation) ? generation : null;

    /// <summary>One call of <see cref="Decide"/>: a working copy of the state, changed step by step, and the actions.</summary>
    private sealed partial class Turn
    {
        private readonly WorkloadState _initial;
        private readonly DateTimeOffset _now;
        private readonly SupervisorOptions _options;
        private readonly IPlacement _nodes;
        private readonly Workload _w;
        private readonly RestartTracker _tracker;
        private readonly List<Step> _todo;
        private readonly List<HistoryLine> _history;
        private Workload _snapshot;
        private string? _previousAttempt;
        private bool _launchPending, _reconciled, _reconcileAgain, _targetsAdded, _deleted, _waiting;
        private long _targetsGeneration, _caller;
        private DateTimeOffset _retryAt, _armAt, _targetsRetryAt;
        private ArmedSuccessor? _armed;
        private StopOutcome? _lastStop;
        private Refusal? _lastRefusal;

        public List<WorkloadAction> Actions { get; } = [];

        public Turn(WorkloadState s, DateTimeOffset now, SupervisorOptions options, IPlacement nodes)
        {
            _initial = s;
            _now = now;
            _options = options;
            _nodes = nodes;
            _w = s.Workload.Clone();
            _tracker = Tracker(s, now);
            _todo = [.. s.Todo];
            _history = [.. s.History];
            _snapshot = s.Snapshot;
            _previousAttempt = s.PreviousAttempt;
            (_launchPending, _reconciled, _reconcileAgain, _targetsAdded, _deleted, _waiting) = (s.LaunchPending, s.Reconciled, s.ReconcileAgain, s.TargetsAdded, s.Deleted, s.Waiting);
            (_targetsGeneration, _caller, _retryAt, _armed, _lastStop, _lastRefusal) = (s.TargetsGeneration, s.Caller, s.RetryAt, s.Armed, s.LastStop, s.LastRefusal);
            (_armAt, _targetsRetryAt) = (s.ArmAt, s.TargetsRetryAt);
        }

        public WorkloadState Build() => _initial with
        {
            Workload = _w,
            Snapshot = _snapshot,
            Restart = _tracker.State,
            PreviousAttempt = _previousAttempt,
            LaunchPending = _launchPending,
            Reconciled = _reconciled,
            ReconcileAgain = _reconcileAgain,
            TargetsAdded = _targetsAdded,
            TargetsGeneration = _targetsGeneration,
            Deleted = _deleted,
            RetryAt = _retryAt,
            Armed = _armed,
            ArmAt = _armAt,
            TargetsRetryAt = _targetsRetryAt,
            Todo = [.. _todo],
            Waiting = _waiting,
            Caller = _todo.Count == 0 ? 0 : _caller,
            LastStop = _todo.Count == 0 ? null : _lastStop,
            LastRefusal = _todo.Count == 0 ? null : _lastRefusal,
            History = [.. _history],
        };

        private string Name => _w.Name;
        private WorkloadStatus Status => _w.Status;
        private bool HasInstance => _w.Status.InstanceId.Length > 0;

        public void Handle(CoreEvent e)
        {
            if (e is CoreEvent.CallResult result)
            {
                if (!_waiting || _todo.Count == 0) throw new InvalidOperationException($"workload '{Name}': a call result with no call made");
                _waiting = false;
                var step = _todo[0];
                _todo.RemoveAt(0);
                Resume(step, result);
                return;
            }
            if (_waiting || _todo.Count > 0) throw new InvalidOperationException($"workload '{Name}': a message while another is in hand");
            if (_deleted)
            {
                if (e.Caller != 0) Actions.Add(new WorkloadAction.Reply(e.Caller, null, Gone()));
                return;
            }
            _caller = e.Caller;
            _lastStop = null;
            _lastRefusal = null;
            Begin(e);
        }

        private PlatformException Gone() => PlatformException.NotFound("workload", Name, $"workload '{Name}' was deleted");

        /// <summary>Runs steps until one waits for a call or none is left.</summary>
        public void Pump()
        {
            while (!_waiting && _todo.Count > 0)
            {
                var step = _todo[0];
                _todo.RemoveAt(0);
                Run(step);
            }
        }

        private void Push(params Step[] steps) => _todo.InsertRange(0, steps);

        /// <summary>Issues <paramref name="call"/>; <paramref name="waiting"/> stays at the head until its result.</summary>
        private void Await(Step waiting, Call call)
        {
            _todo.Insert(0, waiting);
            _waiting = true;
            Actions.Add(call);
        }

        private void Fail(PlatformException error)
        {
            if (_caller != 0) Actions.Add(new WorkloadAction.Reply(_caller, null, error));
            _todo.Clear();
        }

        private void Log(LogLevel level, string message) => Actions.Add(new WorkloadAction.Log(level, message));

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
            RestartPhase.BackingOff => $"{what}; restarting in {(_tracker.NextStartAt!.Value - _now).TotalSeconds:0.###}s (restart {_tracker.RestartCount} of {_tracker.Policy.MaxRestarts} within {_tracker.Policy.RestartWindow})",
            RestartPhase.CoolingOff => $"{what}; {_tracker.RestartCount} restarts within {_tracker.Policy.RestartWindow}: cooling off until {_tracker.NextStartAt:HH:mm:ss}",
            RestartPhase.Stopped or RestartPhase.Failed => $"{what}; not restarted (policy {_tracker.Policy.Mode})",
            _ => what,
        };

        /// <summary>A line of history, stored with the next <see cref="Save"/> in the same transaction.</summary>
        private void History(long generation, string what, string detail) => _history.Add(new HistoryLine(generation, _now, what, detail));

        /// <summary>Stores the workload (the executor stamps the store's next revision on it) and publishes the change.</summary>
        private void Save(Phase phase, string message)
        {
            if (_deleted) return;
            var previous = _snapshot.Status.Phase;
            var s = _w.Status;
            s.Phase = phase;
            s.Message = message;
            s.RestartCount = _tracker.RestartCount;
            s.TotalRestarts = _tracker.TotalRestarts;
            s.NextRestartTime = _tracker.NextStartAt is { } next && phase is Phase.BackingOff or Phase.CoolingOff ? Timestamp.FromDateTimeOffset(next) : null;
            s.TraceId = TraceId;
            _snapshot = _w.Clone();
            Actions.Add(new WorkloadAction.Persist(new WorkloadRecord(_snapshot, _tracker.State, _initial.Lifecycle, _previousAttempt), [.. _history]));
            _history.Clear();
            // Every stored change reaches the watchers (a restart through an armed successor stays RUNNING), so a
            // watcher that re-lists after a break and then follows the stream misses no revision.
            Actions.Add(new WorkloadAction.Publish(_snapshot, previous, message));
        }

        private string? _traceId;

        /// <summary>The lifecycle trace's id (parsed once per decision: it is in every save and every request id).</summary>
        private string TraceId => _traceId ??= ActivityContext.Parse(_initial.Lifecycle, null).TraceId.ToHexString();

        private ExitInfo Exit(Instance? instance, string reason)
        {
            var info = new ExitInfo { Time = instance?.ExitTime ?? Timestamp.FromDateTimeOffset(_now), Reason = reason };
            if (instance is { HasExitCode: true }) info.ExitCode = instance.ExitCode;
            if (instance is { HasSignal: true }) info.Signal = instance.Signal;
            return info;
        }

        private static string DescribeExit(ExitInfo exit) =>
            exit.HasExitCode ? $"{exit.Reason} with code {exit.ExitCode}" : exit.HasSignal ? $"{exit.Reason} by signal {exit.Signal}" : exit.Reason;

        private string RestartReason() => Status.LastExit?.Reason is { Length: > 0 } reason ? reason : "restart";

        /// <summary>Whether <paramref name="instance"/> is this workload's generation N+1 (only an armed successor can be:
        /// generation numbers are handed out here, one at a time, and stored before any other launch).</summary>
        private bool IsSuccessor(Instance instance, long generation) =>
            instance.Labels.GetValueOrDefault(WorkloadLabels.Workload) == Name && GenerationOf(instance.Labels) == generation + 1;

        /// <summary>The Launcher request of generation <paramref name="generation"/> (its start span is the executor's).</summary>
        private LaunchRequest Request(long generation)
        {
            var request = new LaunchRequest
            {
                Env = { _w.Launch.Env },
                Workload = Name,
                Labels = { _w.Labels },
                // Unique per incarnation of the name (a deleted and re-created workload starts at generation 1 again).
                RequestId = $"supervisor/{Name}/{TraceId}/{generation}",
                StopGrace = _w.StopGrace ?? Duration.FromTimeSpan(_options.DefaultStopGrace),
            };
            request.Labels[WorkloadLabels.Workload] = Name;
            request.Labels[WorkloadLabels.Generation] = generation.ToString(CultureInfo.InvariantCulture);
            request.Env["PLATFORM_GENERATION"] = generation.ToString(CultureInfo.InvariantCulture);
            if (_w.Launch.SourceCase == LaunchSpec.SourceOneofCase.Template) request.Template = _w.Launch.Template;
            else request.Process = _w.Launch.Process;
            return request;
        }

        private StartSpan Span(long generation, string reason) => new(Name, _initial.Lifecycle, _previousAttempt, generation, reason);
    }
}
