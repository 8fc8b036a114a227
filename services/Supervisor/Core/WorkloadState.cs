using System.Collections.Immutable;
using Grpc.Core;
using Platform.Launcher.V1;
using Platform.Monitor.V1;
using Platform.Restarts;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Core;

/// <summary>
/// Everything the Supervisor knows about one workload, as a value: <see cref="WorkloadCore.Decide"/> takes one and an
/// event and returns the next one with the actions to run. <see cref="Workload"/> and <see cref="Snapshot"/> are never
/// mutated once they are in a state (the core clones before it changes them).
/// </summary>
public sealed record WorkloadState
{
    /// <summary>Spec and status as they are now (status: generation, current instance, last exit, phase).</summary>
    public required Workload Workload { get; init; }

    /// <summary>The workload as last stored and published: what callers are answered with.</summary>
    public required Workload Snapshot { get; init; }

    /// <summary>The restart policy's part (libs/Restarts): phase, counts, backoff and cool-off clocks.</summary>
    public required RestartState Restart { get; init; }

    /// <summary>The workload's lifecycle trace context (W3C traceparent): every start span is a child of it.</summary>
    public required string Lifecycle { get; init; }

    /// <summary>The context of the last start span, linked from the next one.</summary>
    public string? PreviousAttempt { get; init; }

    /// <summary>The generation in the status was stored, its launch not answered yet (it may have happened): retried
    /// under the same number, which the Launcher answers with the first instance.</summary>
    public bool LaunchPending { get; init; }

    /// <summary>Compared with the Launcher's running instances since this state was loaded: nothing starts before.</summary>
    public bool Reconciled { get; init; }

    /// <summary>A reconcile could not finish (the Launcher out of reach): done again at the next tick.</summary>
    public bool ReconcileAgain { get; init; }

    /// <summary>The Monitor holds the current generation's targets.</summary>
    public bool TargetsAdded { get; init; }

    /// <summary>The generation whose targets the Monitor may hold (0: none).</summary>
    public long TargetsGeneration { get; init; }

    public bool Deleted { get; init; }

    /// <summary>No start before this (after the Launcher was out of reach, or an unexpected error).</summary>
    public DateTimeOffset RetryAt { get; init; }

    /// <summary>The successor armed at the Launcher for the current instance, if any.</summary>
    public ArmedSuccessor? Armed { get; init; }

    /// <summary>When to arm the current instance's successor (<see cref="SupervisorOptions.ArmAfter"/> after its start;
    /// default: nothing scheduled).</summary>
    public DateTimeOffset ArmAt { get; init; }

    /// <summary>When to add the targets again after the Monitor refused them for now (default: nothing scheduled).</summary>
    public DateTimeOffset TargetsRetryAt { get; init; }

    /// <summary>What the message in hand still has to do, in order; the head may be waiting for a call's result.</summary>
    public ImmutableList<Step> Todo { get; init; } = [];

    /// <summary>The head of <see cref="Todo"/> issued a call; the next event is its result.</summary>
    public bool Waiting { get; init; }

    /// <summary>Who asked for the message in hand (0: nobody waits for it).</summary>
    public long Caller { get; init; }

    /// <summary>How the last stop of the message in hand ended, and what the Launcher answered to its last start.</summary>
    public StopOutcome? LastStop { get; init; }

    public Refusal? LastRefusal { get; init; }

    /// <summary>Lines of history for the next store.</summary>
    public ImmutableList<HistoryLine> History { get; init; } = [];

    public string Name => Workload.Name;

    /// <summary>The state of a stored workload; not reconciled unless it was just created here.</summary>
    public static WorkloadState Load(WorkloadRecord record, bool reconciled)
    {
        var status = record.Workload.Status;
        return new WorkloadState
        {
            Workload = record.Workload.Clone(),
            Snapshot = record.Workload.Clone(),
            Restart = record.Restart,
            Lifecycle = record.LifecycleContext,
            PreviousAttempt = record.PreviousAttempt,
            Reconciled = reconciled,
            // Generation N stored with no instance: its launch may or may not have happened.
            LaunchPending = status.Phase == Phase.Pending && status.InstanceId.Length == 0 && status.Generation > 0,
        };
    }
}

/// <summary>A successor armed at the Launcher: of <see cref="Generation"/> (null: one may be armed, of a generation not
/// known here, after a call whose answer was lost), with the start span's context its child got.</summary>
public sealed record ArmedSuccessor(long? Generation, string? TraceParent);

public sealed record HistoryLine(long Generation, DateTimeOffset Time, string Event, string Detail);

public enum StopOutcome
{
    /// <summary>The Launcher cannot be reached: nothing changed (no restart happens blindly).</summary>
    Unreachable,
    /// <summary>No instance is current any more.</summary>
    Stopped,
    /// <summary>The instance had just exited by itself and its armed successor runs: it is the current instance.</summary>
    Replaced,
}

/// <summary>The Launcher refused a launch spec (unknown template, missing executable): its status and words.</summary>
public sealed record Refusal(StatusCode Code, string Detail);

/// <summary>The parts of a change of spec that its later steps need.</summary>
public sealed record SpecChange(Workload Spec, bool Restart, bool HealthChanged, LaunchSpec PreviousLaunch, Phase PhaseBefore);

/// <summary>One step of the message in hand. Steps that call out stay at the head of the list until the result comes.</summary>
public abstract record Step
{
    public sealed record Start(string Reason) : Step;
    public sealed record Stop(string Reason, bool TakeSuccessor) : Step;
    /// <summary>The stopped instance had exited by itself and named a successor: does it run?</summary>
    public sealed record CheckSuccessor(Instance Stopped, string Reason) : Step;
    public sealed record EnsureTargets : Step;
    public sealed record AddTargets(ImmutableList<Target> Remaining) : Step;
    /// <summary>Removes the generation's targets and waits for it (before new ones are added under the same ids).</summary>
    public sealed record RemoveTargets(long Generation) : Step;
    public sealed record Arm : Step;

    /// <summary>Arms when <see cref="WorkloadState.ArmAt"/> has come.</summary>
    public sealed record ArmIfDue : Step;
    /// <summary>An arm call made for generation <paramref name="Generation"/> (0: a disarm).</summary>
    public sealed record Arming(long Generation) : Step;
    /// <summary>Sets how the stop of the message in hand ended (after the steps the stop itself led to).</summary>
    public sealed record Outcome(StopOutcome Result) : Step;
    public sealed record Resync : Step;
    public sealed record StopStray(string InstanceId, string Node) : Step;
    public sealed record ReconcileCurrent(ImmutableList<Instance> Running) : Step;
    /// <summary>The current instance ended and named a successor that is not running: how did it end?</summary>
    public sealed record ReconcileSuccessor(Instance Ended, ImmutableList<Instance> Running) : Step;
    public sealed record ReconcileEnd(ImmutableList<Instance> Running) : Step;
    public sealed record StartIfDue : Step;
    public sealed record RefreshStable : Step;
    public sealed record ApplyAfterStop(SpecChange Change) : Step;
    public sealed record ApplyAfterStart(SpecChange Change) : Step;
    public sealed record FirstStartAfter : Step;
    public sealed record ManualAfterStop(string Why) : Step;
    public sealed record UnhealthyAfterStop(string Reason, string Detail) : Step;
    public sealed record DeleteAfterStop : Step;
    public sealed record SuccessorAfterStop(Instance Successor, ExitInfo? Exit, string? TraceParent) : Step;
    public sealed record Reply : Step;
    /// <summary>Answers the caller with an error and drops the rest of the message (a throw, as data).</summary>
    public sealed record Fail(Platform.ServiceDefaults.PlatformException Error) : Step;
}
