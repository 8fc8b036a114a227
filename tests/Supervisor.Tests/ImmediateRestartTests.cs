using Google.Protobuf.WellKnownTypes;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Supervisor.V1;
using Platform.Testing;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Tests;

/// <summary>
/// Zero-backoff workloads: the supervisor arms the launcher with the next generation, and the launcher starts it the
/// moment the instance fails, with no round trip through the supervisor; the policy, fencing and stops still hold.
/// </summary>
public sealed class ImmediateRestartTests : SupervisorTestBase
{
    private static RestartPolicy Immediate(int maxRestarts = 100, RestartPolicy.Types.Mode mode = RestartPolicy.Types.Mode.Always) => new()
    {
        Mode = mode,
        InitialBackoff = Duration.FromTimeSpan(TimeSpan.Zero),
        MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
        MaxRestarts = maxRestarts,
        Cooloff = Duration.FromTimeSpan(TimeSpan.FromMinutes(5)),
    };

    private Task<Instance> ArmedAsync(string instanceId) =>
        Eventually.ValueAsync(() => InstanceAsync(instanceId),
            i => i.SuccessorArmed, Timeout, $"a successor armed for {instanceId}");

    private Task<Instance> InstanceAsync(string id) => LauncherClient.GetInstanceAsync(new GetInstanceRequest { Id = id }).ResponseAsync;

    /// <summary>Applies a zero-backoff workload running `sleep 300` and waits until generation 1 runs and is armed.</summary>
    private async Task<Workload> ArmedWorkloadAsync(string name, RestartPolicy? policy = null)
    {
        await ApplyAsync(Shell(name, "exec sleep 300", policy ?? Immediate()));
        var first = await RunningAsync(name, 1);
        await ArmedAsync(first.Status.InstanceId);
        return first;
    }

    private static void Kill(long pid) => ProcessTree.Signal(ProcFs.Identify((int)pid)!.Value, ProcessTree.SIGKILL);

    [Fact]
    public async Task The_successor_is_armed_a_moment_after_a_start_off_the_start_path_and_a_crash_meanwhile_still_restarts()
    {
        // Arming spawns a held process: work that must not delay starts. ArmAfter (1 s by default) after the start.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await ApplyAsync(Shell("deferred", "exec sleep 300", Immediate()));
        var first = await RunningAsync("deferred", 1);
        Assert.False((await InstanceAsync(first.Status.InstanceId)).SuccessorArmed);
        await ArmedAsync(first.Status.InstanceId);
        Assert.True(clock.Elapsed >= new SupervisorOptions().ArmAfter, $"armed after {clock.Elapsed.TotalMilliseconds:0} ms");

        // A crash before the arm: restarted through the supervisor, then armed again once the restart is past ArmAfter.
        await ApplyAsync(Shell("early", "exec sleep 300", Immediate()));
        var early = await RunningAsync("early", 1);
        Kill(early.Status.Pid);
        var second = await RunningAsync("early", 2);
        Assert.Equal("", (await InstanceAsync(early.Status.InstanceId)).SuccessorId);
        Assert.NotEqual(early.Status.InstanceId, second.Status.InstanceId);
        await ArmedAsync(second.Status.InstanceId);
    }

    [Fact]
    public async Task A_crash_is_followed_by_the_armed_generation_started_by_the_launcher_and_counted_like_any_restart()
    {
        var first = await ArmedWorkloadAsync("instant");

        Kill(first.Status.Pid);
        var second = await RunningAsync("instant", 2);
        // The launcher started it itself: the exited instance names it as its successor.
        var exited = await InstanceAsync(first.Status.InstanceId);
        Assert.Equal(Instance.Types.State.Exited, exited.State);
        Assert.Equal(second.Status.InstanceId, exited.SuccessorId);
        Assert.Equal(9, second.Status.LastExit.Signal);
        Assert.Equal(1, second.Status.RestartCount);
        Assert.Equal(1, second.Status.TotalRestarts);
        // Fenced like every start: its generation in the label and the environment, in the workload's trace.
        var successor = await InstanceAsync(second.Status.InstanceId);
        Assert.Equal("2", successor.Labels[WorkloadActorLabels.Generation]);
        var env = await ProcessEnvironment.ReadAsync(second.Status.Pid);
        Assert.Contains("PLATFORM_GENERATION=2", env);
        Assert.Contains(env, e => e.StartsWith($"TRACEPARENT=00-{first.Status.TraceId}-", StringComparison.Ordinal));
        Assert.Single(await LiveInstancesAsync("instant"));

        // Armed again for the next one, and so on.
        await ArmedAsync(second.Status.InstanceId);
        Kill(second.Status.Pid);
        var third = await RunningAsync("instant", 3);
        Assert.Equal(2, third.Status.RestartCount);
        Assert.Single(await LiveInstancesAsync("instant"));
    }

    [Fact]
    public async Task At_the_restart_limit_nothing_is_armed_and_the_next_crash_cools_off()
    {
        await ApplyAsync(Shell("limited", "exec sleep 300", Immediate(maxRestarts: 2)));
        var current = await RunningAsync("limited", 1);
        for (var generation = 2; generation <= 3; generation++)
        {
            await ArmedAsync(current.Status.InstanceId);
            Kill(current.Status.Pid);
            current = await RunningAsync("limited", generation);
        }
        // Two restarts used up the limit: the launcher holds no successor for this one...
        await Task.Delay(300);
        Assert.False((await InstanceAsync(current.Status.InstanceId)).SuccessorArmed);
        // ...so its crash starts nothing: the supervisor cools off.
        Kill(current.Status.Pid);
        var cooling = await WaitAsync("limited", w => w.Status.Phase == Phase.CoolingOff, "limited to cool off");
        Assert.Equal(3, cooling.Status.Generation);
        await Task.Delay(300);
        Assert.Empty(await LiveInstancesAsync("limited"));
    }

    [Fact]
    public async Task Under_ON_FAILURE_a_signal_is_followed_by_the_successor_and_a_clean_exit_by_nothing()
    {
        var first = await ArmedWorkloadAsync("onfail", Immediate(mode: RestartPolicy.Types.Mode.OnFailure));
        ProcessTree.Signal(ProcFs.Identify((int)first.Status.Pid)!.Value, ProcessTree.SIGTERM);
        await RunningAsync("onfail", 2);

        // A clean exit: ON_FAILURE leaves it stopped, and the launcher, though armed, started nothing.
        // It exits (cleanly) once told to, after it is armed (ArmAfter, 1 s): a fixed lifetime raced the arm on a busy machine.
        var exitNow = Path.Combine(DataDirectory, "clean.exit");
        await ApplyAsync(Shell("clean", $"while [ ! -e {exitNow} ]; do sleep 0.05; done; exit 0", Immediate(mode: RestartPolicy.Types.Mode.OnFailure)));
        var running = await RunningAsync("clean", 1);
        Assert.True((await ArmedAsync(running.Status.InstanceId)).SuccessorArmed);
        await File.WriteAllTextAsync(exitNow, "");
        var stopped = await WaitAsync("clean", w => w.Status.Phase == Phase.Stopped, "clean to stop after its clean exit");
        Assert.Equal(1, stopped.Status.Generation);
        Assert.Equal(0, stopped.Status.LastExit.ExitCode);
        Assert.Equal("", (await InstanceAsync(running.Status.InstanceId)).SuccessorId);
        await Task.Delay(300);
        Assert.Empty(await LiveInstancesAsync("clean"));
    }

    [Fact]
    public async Task A_restart_by_hand_or_a_delete_of_an_armed_workload_leaves_exactly_one_or_no_instance()
    {
        var first = await ArmedWorkloadAsync("manual");

        // A stop asked for is not a crash: the launcher starts no successor; the supervisor starts generation 2.
        var restarted = await Client.RestartWorkloadAsync(new RestartWorkloadRequest { Name = "manual" });
        Assert.Equal(2, restarted.Status.Generation);
        await Task.Delay(300);
        Assert.Equal([restarted.Status.InstanceId], (await LiveInstancesAsync("manual")).Select(i => i.Id));
        Assert.Equal("", (await InstanceAsync(first.Status.InstanceId)).SuccessorId);

        await ArmedAsync(restarted.Status.InstanceId);
        await Client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = "manual" });
        await Task.Delay(300);
        Assert.Empty(await LiveInstancesAsync("manual"));
    }

    [Fact]
    public async Task A_policy_change_to_a_backoff_disarms_the_launcher()
    {
        var first = await ArmedWorkloadAsync("slowed");

        var slow = Immediate();
        slow.InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(30));
        slow.MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(60));
        await ApplyAsync(Shell("slowed", "exec sleep 300", slow));
        Assert.False((await InstanceAsync(first.Status.InstanceId)).SuccessorArmed);

        Kill(first.Status.Pid);
        var backing = await WaitAsync("slowed", w => w.Status.Phase == Phase.BackingOff, "slowed to back off");
        Assert.Equal(1, backing.Status.Generation);
        Assert.Empty(await LiveInstancesAsync("slowed"));
    }

    [Fact]
    public async Task A_successor_started_while_the_supervisor_was_down_is_taken_as_the_next_generation_not_stopped_as_a_stray()
    {
        var first = await ArmedWorkloadAsync("orphan");

        await SupervisorProcess.KillAsync();
        Kill(first.Status.Pid);
        var successor = await Eventually.ValueAsync(
            async () => (await InstanceAsync(first.Status.InstanceId)).SuccessorId,
            id => id.Length > 0, Timeout, "the launcher to start the successor");
        await StartSupervisorAsync();

        var second = await RunningAsync("orphan", 2);
        Assert.Equal(successor, second.Status.InstanceId);
        Assert.Equal(1, second.Status.RestartCount);
        await Task.Delay(500);
        Assert.Equal([successor], (await LiveInstancesAsync("orphan")).Select(i => i.Id));
        await ArmedAsync(successor); // and armed again by the new supervisor
    }
}
