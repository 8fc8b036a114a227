using Grpc.Core;
using Microsoft.Extensions.Logging;
using Platform.Launcher.V1;
using Platform.Monitor.V1;
using Platform.ServiceDefaults;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Core;

/// <summary>What happens to a workload: a message from outside (with the caller waiting for it, if any) or the result
/// of the call the core asked for last.</summary>
public abstract record CoreEvent
{
    /// <summary>Who waits for the answer (0: nobody).</summary>
    public long Caller { get; init; }

    /// <summary>The first start of a new workload, answered to its ApplyWorkload.</summary>
    public sealed record FirstStart : CoreEvent;
    public sealed record Applied(Workload Spec) : CoreEvent;
    public sealed record RestartRequested(long GenerationSeen, string Reason, DateTimeOffset RequestedAt) : CoreEvent;
    public sealed record DeleteRequested : CoreEvent;
    /// <summary>The Launcher reports an instance ended, perhaps with the successor armed for it already started.</summary>
    public sealed record Exited(Instance Instance, Instance? Successor) : CoreEvent;
    /// <summary>The Monitor's verdict on one of the workload's checks turned UNHEALTHY.</summary>
    public sealed record Unhealthy(long Generation, string Check, string Detail) : CoreEvent;
    /// <summary>The running instances of this workload on <paramref name="Node"/> (null: on every launcher, the
    /// static one), after (re)connecting to that launcher's events.</summary>
    public sealed record Reconciled(IReadOnlyList<Instance> Running, string? Node = null) : CoreEvent;
    /// <summary>A node's lease ran out (or, after a start of the supervisor, its node is not registered): whatever the
    /// workload ran or was starting there is lost, and it is placed again.</summary>
    public sealed record NodeGone(string Node) : CoreEvent;
    /// <summary>The Monitor (re)connected: it may have lost the workload's targets.</summary>
    public sealed record MonitorReconnected : CoreEvent;
    /// <summary>Answered once every message before it has been handled.</summary>
    public sealed record Flush : CoreEvent;
    /// <summary>Nothing waiting: time to look at timers (backoff over, stable run, resync due).</summary>
    public sealed record Tick : CoreEvent;

    /// <summary>What the last call answered: an instance, a list of them, the context its start span gave, or an error.</summary>
    public sealed record CallResult(Instance? Instance = null, IReadOnlyList<Instance>? Instances = null, string? TraceParent = null, CallError? Error = null) : CoreEvent;
}

/// <summary>A call that failed: <see cref="Unreachable"/> when the dependency did not answer (down, too slow, its
/// breaker open), else its refusal.</summary>
public sealed record CallError(bool Unreachable, StatusCode Code, string Detail, string Message);

/// <summary>What the core wants done, in order. A <see cref="Call"/> is always last: its result is the next event.</summary>
public abstract record WorkloadAction
{
    public sealed record Persist(WorkloadRecord Record, IReadOnlyList<HistoryLine> History) : WorkloadAction;
    public sealed record DeleteRecord(string Name) : WorkloadAction;
    /// <summary>A change of phase for the watchers.</summary>
    public sealed record Publish(Workload Snapshot, Phase Previous, string Message) : WorkloadAction;
    public sealed record Reply(long Caller, Workload? Value, PlatformException? Error) : WorkloadAction;
    public sealed record Log(LogLevel Level, string Message) : WorkloadAction;
    /// <summary>Drops the Monitor's targets of a generation in the background: nothing waits for it.</summary>
    public sealed record RemoveTargets(string Name, long Generation) : WorkloadAction;
}

/// <summary>A call to the Launcher or the Monitor; its answer comes back as a <see cref="CoreEvent.CallResult"/>.</summary>
public abstract record Call : WorkloadAction
{
    /// <summary>Starts <see cref="Request"/> inside a start span (the child gets its context as TRACEPARENT).</summary>
    public sealed record Launch(LaunchRequest Request, StartSpan Span, string Node) : Call;
    /// <summary>Stops an instance's tree; <see cref="Grace"/> null: the Launcher's default, no deadline.</summary>
    public sealed record StopInstance(string Id, TimeSpan? Grace, string Node) : Call;
    public sealed record GetInstance(string Id, string Node) : Call;
    public sealed record ArmSuccessor(ArmSuccessorRequest Request, StartSpan? Span, string Node) : Call;
    /// <summary>The workload's running instances on every launcher.</summary>
    public sealed record ListInstances(string Workload) : Call;
    public sealed record AddTarget(Target Target) : Call;
    /// <summary>Removes a generation's targets and answers once done.</summary>
    public sealed record RemoveTargetsAndWait(string Name, long Generation) : Call;
}

/// <summary>
/// Where workloads go, the one decision shared between workloads (see NodeSet): asked by the core when it starts a new
/// generation. <see cref="Static"/>: one launcher, no placement (every node name is that launcher).
/// </summary>
public interface IPlacement
{
    bool Static { get; }
    /// <summary>Whether <paramref name="node"/> is registered and may run a workload with <paramref name="placement"/>.</summary>
    bool Fits(Placement? placement, string node);
    /// <summary>Chooses (and counts at once) the node for <paramref name="workload"/>, or null with the reason.</summary>
    string? Place(string workload, Placement? placement, out string reason);
    void Assign(string workload, string node);
}

/// <summary>One launcher known by its service name: every workload goes there.</summary>
public sealed class SingleLauncher : IPlacement
{
    public static SingleLauncher Instance { get; } = new();
    public bool Static => true;
    public bool Fits(Placement? placement, string node) => true;
    public string? Place(string workload, Placement? placement, out string reason)
    {
        reason = "";
        return "";
    }
    public void Assign(string workload, string node) { }
}

/// <summary>A start span to begin before the call and end after it: a child of the lifecycle trace, linked to the
/// previous attempt.</summary>
public sealed record StartSpan(string Workload, string Lifecycle, string? PreviousAttempt, long Generation, string Reason);
