using Google.Protobuf.WellKnownTypes;
using Grpc.Core.Interceptors;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Platform.Monitor.V1;
using Platform.ProcessControl;
using Platform.Supervisor.V1;
using Platform.Testing;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Tests;

public sealed class HealthTests : SupervisorTestBase
{
    private static RestartPolicy Quick => new() { InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)) };

    [Fact]
    public async Task A_SIGSTOPped_workload_whose_heartbeat_stops_is_restarted_after_the_timeout()
    {
        var heartbeat = Path.Combine(DataDirectory, "heartbeat");
        var workload = Shell("beating", $"while :; do touch {heartbeat}; sleep 0.1; done", Quick);
        workload.Health = new HealthPolicy { HeartbeatFile = heartbeat, HeartbeatTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)) };
        await ApplyAsync(workload);
        var first = await RunningAsync("beating", 1);
        // Beating: the monitor looks at the heartbeat for longer than the timeout (every 250 ms), finds it fresh every
        // time, and nothing is restarted.
        var monitor = new Monitor.V1.AgentMonitor.AgentMonitorClient(MonitorHost.NewChannel().Intercept(DefaultDeadline.Minute));
        var probes = await monitor.ProbedAsync("supervisor/beating/1/heartbeat", 7, Timeout);
        Assert.All(probes, p => Assert.Equal(AgentStatus.Types.State.Healthy, p.State));
        Assert.Equal(1, (await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "beating" })).Status.Generation);

        var stoppedAt = DateTime.UtcNow;
        ProcessTree.Signal(ProcFs.Identify((int)first.Status.Pid)!.Value, 19); // SIGSTOP: alive, but no heartbeat
        var second = await RunningAsync("beating", 2);
        var took = DateTime.UtcNow - stoppedAt;
        Assert.StartsWith("heartbeat-timeout", second.Status.LastExit.Reason);
        Assert.True(took >= TimeSpan.FromSeconds(0.9), $"restarted {took} after the SIGSTOP, before the 1 s heartbeat timeout");
        Assert.Null(ProcFs.Identify((int)first.Status.Pid)); // the stopped tree is gone, not left behind
        Assert.Single(await LiveInstancesAsync("beating"));
    }

    [Fact]
    public async Task A_workload_whose_monitor_verdict_turns_unhealthy_is_restarted_and_unknown_is_not_a_failure()
    {
        var failing = false;
        await using var app = await Testing.AgentServer.StartAsync(a => a.MapGet("/healthz", () => Results.StatusCode(failing ? 500 : 200)));
        var url = app.Address + "/healthz";

        var workload = Shell("served", "exec sleep 300", Quick);
        workload.Health = new HealthPolicy
        {
            Probe = new Target { Interval = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(200)), FailureThreshold = 2, Http = new HttpProbe { Url = url } },
        };
        await ApplyAsync(workload);
        var first = await RunningAsync("served", 1);
        var monitor = new Monitor.V1.AgentMonitor.AgentMonitorClient(MonitorHost.NewChannel().Intercept(DefaultDeadline.Minute));
        await Testing.Eventually.ValueAsync(() => monitor.GetStatusAsync(new GetStatusRequest { TargetId = "supervisor/served/1/health" }).ResponseAsync,
            s => s.State == AgentStatus.Types.State.Healthy, Timeout, "the health target to be healthy");

        failing = true;
        var second = await RunningAsync("served", 2);
        Assert.StartsWith("unhealthy: HTTP 500", second.Status.LastExit.Reason);
        failing = false;
        Assert.Null(ProcFs.Identify((int)first.Status.Pid));
        // The old generation's target goes, the new one's comes (both just after the restart is recorded).
        await Testing.Eventually.ValueAsync(
            async () => (await monitor.ListTargetsAsync(new ListTargetsRequest { Workload = "served" })).Targets.Select(t => t.Id).ToList(),
            ids => ids.SequenceEqual(["supervisor/served/2/health"]), Timeout, "only generation 2's health target");
        await app.StopAsync();

        // The server goes away entirely: connection refused is a failure too; but a stopped monitor (UNKNOWN) is not.
    }

    [Fact]
    public async Task A_tmux_probe_of_a_server_the_workload_starts_itself_is_added_once_the_server_is_up()
    {
        // The workload starts its own tmux server, 3 s after its start: the monitor refuses the target until then
        // (FAILED_PRECONDITION), and the supervisor adds it again until it holds, saying why meanwhile.
        var socket = Path.Combine(DataDirectory, "tmux.sock");
        var workload = Shell("paned", $"sleep 3; tmux -S {socket} new-session -d -s agent 'echo Waiting for your input; exec sleep 300'; " +
            $"while tmux -S {socket} has-session -t agent 2>/dev/null; do sleep 1; done", Quick);
        workload.Health = new HealthPolicy
        {
            Probe = new Target
            {
                Interval = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(500)),
                TmuxPane = new TmuxPaneProbe { Target = "agent:0.0", SocketPath = socket, IdlePatterns = { "Waiting for your input" } },
            },
        };
        await ApplyAsync(workload);
        var waiting = await Testing.Eventually.ValueAsync(() => Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "paned" }).ResponseAsync,
            w => w.Status.Message.Contains("cannot probe it yet", StringComparison.Ordinal), Timeout, "the refusal in the status");
        Assert.Contains("no tmux server", waiting.Status.Message);
        Assert.Equal(Phase.Running, waiting.Status.Phase);

        var monitor = new Monitor.V1.AgentMonitor.AgentMonitorClient(MonitorHost.NewChannel().Intercept(DefaultDeadline.Minute));
        await Testing.Eventually.ValueAsync(async () =>
            {
                try { return await monitor.GetStatusAsync(new GetStatusRequest { TargetId = "supervisor/paned/1/health" }); }
                catch (Grpc.Core.RpcException e) when (e.StatusCode == Grpc.Core.StatusCode.NotFound) { return new AgentStatus(); }
            },
            s => s.State == AgentStatus.Types.State.Idle, Timeout, "the tmux target added and IDLE by its pattern");
        var now = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "paned" });
        Assert.Equal(1, now.Status.Generation);
        Assert.Contains("the monitor probes it now", now.Status.Message);
        await Client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = "paned" });
    }

    [Fact]
    public async Task A_storm_of_simultaneous_triggers_gives_one_restart_and_never_two_live_instances()
    {
        var workload = Shell("stormy", "exec sleep 300", new RestartPolicy { InitialBackoff = Duration.FromTimeSpan(TimeSpan.Zero), MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)) });
        workload.Health = new HealthPolicy { Probe = new Target { Interval = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)), FailureThreshold = 1, Process = new ProcessProbe() } };
        await ApplyAsync(workload);
        var first = await RunningAsync("stormy", 1);
        var identity = ProcFs.Identify((int)first.Status.Pid)!.Value;

        // Sample the launcher's view all along: never two live instances.
        using var sampling = new CancellationTokenSource();
        var most = 0;
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                most = Math.Max(most, (await LiveInstancesAsync("stormy")).Count);
                await Task.Delay(5);
            }
        });
        // SIGSTOP (the process probe turns UNHEALTHY), a restart by hand and a SIGKILL (an exit), all at once.
        ProcessTree.Signal(identity, 19);
        var manual = Client.RestartWorkloadAsync(new RestartWorkloadRequest { Name = "stormy", Reason = "storm" }).ResponseAsync;
        ProcessTree.Signal(identity, 9);
        await manual;
        await RunningAsync("stormy", 2);
        await Task.Delay(2000); // late verdicts and events about generation 1 arrive, and change nothing
        await sampling.CancelAsync();
        await sampler;

        var final = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "stormy" });
        Assert.Equal(2, final.Status.Generation);
        Assert.Equal(Phase.Running, final.Status.Phase);
        Assert.Equal(1, final.Status.TotalRestarts);
        Assert.Equal(1, most);
        Assert.Single(await LiveInstancesAsync("stormy"));
    }
}
