using CsCheck;
using Mode = Platform.Supervisor.V1.RestartPolicy.Types.Mode;

namespace Platform.Supervisor.Tests.Core;

/// <summary>
/// The Supervisor's core (<see cref="Supervisor.Core.WorkloadCore.Decide"/>) driven by random interleavings of
/// everything that can happen to a workload: crashes, duplicate and stale exits, verdicts on old generations, restarts by
/// hand during a backoff, new specs (one the Launcher refuses), deletes, calls that do not arrive or whose answers are
/// lost, instances that exit just as a call reaches the Launcher, and the Supervisor killed before or after any call
/// and started again from its store. <see cref="CoreRunner"/> checks after every decision: never two instances, a launch
/// only with none current and when the policy says so, every generation stored before its launch and greater than any
/// before it, one request id per generation, every caller answered once, the backoff and the cool-off as the policy
/// says, the failure count reset only by a stable run or a spent cool-off, and a deleted workload gone for good. CsCheck
/// shrinks a failure to its shortest sequence and prints its seed (replay: <c>Sample(..., seed: "...")</c>).
/// </summary>
public sealed class WorkloadCorePropertyTests
{
    private static readonly Gen<PolicyCase> Policies =
        Gen.Select(
            Gen.OneOf(Mode.Always, Mode.Always, Mode.OnFailure, Mode.Never),
            Gen.OneOf(0, 0, 100, 1000),
            Gen.OneOf(1.0, 2.0),
            Gen.Int[1, 4],
            Gen.OneOf(500, 3000),
            Gen.OneOf(0.0, 0.0, 0.5),
            (mode, initial, multiplier, max, stable, jitter) => new PolicyCase(mode, initial, multiplier, max, stable, jitter));

    private static readonly Gen<Op> Ops = Gen.Frequency(
        (6, Gen.Const((Op)new Op.Tick())),
        (4, Gen.OneOf(50, 300, 1000, 3500).Select(ms => (Op)new Op.Advance(ms))),
        (4, Gen.OneOf(0, 1).Select(code => (Op)new Op.Crash(code))),
        (5, Gen.Const((Op)new Op.Deliver())),
        (1, Gen.Int[0, 100].Select(i => (Op)new Op.Redeliver(i))),
        (2, Gen.Select(Gen.Bool, Gen.Bool, (stale, heartbeat) => (Op)new Op.Verdict(stale, heartbeat))),
        (2, Gen.Bool.Select(stale => (Op)new Op.Restart(stale))),
        (1, Gen.Select(Policies, Gen.OneOf(0, 1, 2), (policy, launch) => (Op)new Op.Apply(policy, launch))),
        (1, Gen.Const((Op)new Op.Delete())),
        (1, Gen.Const((Op)new Op.Flush())),
        (1, Gen.Const((Op)new Op.SupervisorRestart())),
        (1, Gen.Const((Op)new Op.LauncherRestart())),
        (1, Gen.Const((Op)new Op.MonitorReconnect())));

    private static readonly Gen<Fault> Faults = Gen.Frequency(
        (10, Gen.Const(Fault.Ok)),
        (2, Gen.Const(Fault.Unreachable)),
        (2, Gen.Const(Fault.Lost)),
        (1, Gen.Const(Fault.CrashBefore)),
        (1, Gen.Const(Fault.CrashAfter)),
        (2, Gen.Const(Fault.ExitFirst)));

    private static readonly Gen<(PolicyCase Policy, Op[] Ops, Fault[] Faults, int Seed)> Cases =
        Gen.Select(Policies, Ops.Array[1, 60], Faults.Array[0, 60], Gen.Int, (policy, ops, faults, seed) => (policy, ops, faults, seed));

    [Fact]
    public void Every_interleaving_keeps_the_supervisors_promises() =>
        Cases.Sample(c => Run(c.Policy, c.Ops, c.Faults, c.Seed), iter: 20_000);

    /// <summary>
    /// The same search against a Launcher that ignores request ids (a planted defect in the one thing fencing relies on):
    /// a launch whose answer was lost is retried, starts a second process, and the properties must say so.
    /// </summary>
    [Fact]
    public void The_properties_catch_a_launcher_that_ignores_request_ids()
    {
        var error = Assert.ThrowsAny<Exception>(() =>
            Cases.Sample(c => Run(c.Policy, c.Ops, c.Faults, c.Seed, launcherIgnoresRequestIds: true), iter: 5000));
        Assert.Contains("seed", error.Message, StringComparison.OrdinalIgnoreCase);
        var violation = Assert.IsType<PropertyViolation>(error.InnerException);
        // A second process, seen running beside the first or started under a generation already started.
        Assert.Matches("^(two instances run|generation [0-9]+ started after generation [0-9]+)", violation.Message);
    }

    private static void Run(PolicyCase policy, Op[] ops, Fault[] faults, int seed, bool launcherIgnoresRequestIds = false)
    {
        var runner = new CoreRunner(policy, faults, seed, launcherIgnoresRequestIds);
        foreach (var op in ops) runner.Run(op);
    }
}
