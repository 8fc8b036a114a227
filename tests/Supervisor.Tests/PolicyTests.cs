using Google.Protobuf.WellKnownTypes;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Tests;

public sealed class PolicyTests : SupervisorTestBase
{
    [Fact]
    public async Task A_crash_loop_follows_the_backoff_then_cools_off_then_tries_again()
    {
        var policy = new RestartPolicy
        {
            InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(200)),
            Multiplier = 2,
            MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
            MaxRestarts = 3,
            RestartWindow = Duration.FromTimeSpan(TimeSpan.FromMinutes(1)),
            Cooloff = Duration.FromTimeSpan(TimeSpan.FromSeconds(3)),
        };
        using var watch = Client.WatchWorkloads(new WatchWorkloadsRequest { Name = "crashy" });
        await watch.ResponseHeadersAsync;
        var created = await ApplyAsync(Shell("crashy", "exit 1", policy));
        Assert.Equal(1, created.Status.Generation);

        // Every phase change until the workload comes back from its cool-off. Times are the supervisor's own (event
        // time, the exit time the launcher saw, the next start it scheduled), so a loaded machine does not blur them.
        var events = new List<WorkloadEvent>();
        using var cts = new CancellationTokenSource(Timeout);
        var cooled = false;
        while (await watch.ResponseStream.MoveNext(cts.Token))
        {
            var e = watch.ResponseStream.Current;
            events.Add(e);
            if (e.Workload.Status.Phase == Phase.CoolingOff) cooled = true;
            if (cooled && e.Workload.Status.Phase == Phase.Running) break;
        }
        var backoffs = events.Where(e => e.Workload.Status.Phase == Phase.BackingOff).ToList();
        Assert.Equal(3, backoffs.Count);
        var starts = events.Where(e => e.Workload.Status.Phase == Phase.Running).ToList();
        // Backoffs scheduled from each exit: 0.2 s, 0.4 s, 0.8 s; and no start before its time.
        double[] expected = [0.2, 0.4, 0.8];
        for (var i = 0; i < 3; i++)
        {
            var status = backoffs[i].Workload.Status;
            // The event is stamped as the exit is handled, when the next start is scheduled.
            var scheduled = (status.NextRestartTime.ToDateTime() - backoffs[i].Time.ToDateTime()).TotalSeconds;
            Assert.InRange(scheduled, expected[i] - 0.05, expected[i]);
            var next = starts.First(s => s.Workload.Status.Generation == status.Generation + 1);
            Assert.True(next.Time.ToDateTime() >= status.NextRestartTime.ToDateTime(), $"generation {status.Generation + 1} started before its backoff ran out");
        }
        var coolingEvent = events.Single(e => e.Workload.Status.Phase == Phase.CoolingOff);
        var cooling = coolingEvent.Workload.Status;
        Assert.Contains("cooling off until", cooling.Message);
        Assert.Equal(4, cooling.Generation);
        Assert.InRange((cooling.NextRestartTime.ToDateTime() - coolingEvent.Time.ToDateTime()).TotalSeconds, 2.95, 3);
        var again = starts.Last();
        Assert.Equal(5, again.Workload.Status.Generation);
        Assert.True(again.Time.ToDateTime() >= cooling.NextRestartTime.ToDateTime());
        var final = (await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "crashy" })).Status;
        Assert.Equal(1, final.LastExit.ExitCode);
        Assert.True(final.TotalRestarts >= 4);
    }

    [Fact]
    public async Task Applying_the_same_spec_again_changes_nothing_and_a_changed_label_is_stored()
    {
        var spec = Shell("same", "exec sleep 300");
        spec.Labels.Add("team", "a");
        await ApplyAsync(spec);
        var running = await RunningAsync("same", 1);

        var again = await ApplyAsync(spec);
        Assert.Equal(running.Revision, again.Revision);
        Assert.Equal(running.UpdateTime, again.UpdateTime);
        Assert.Equal(running.Status.InstanceId, again.Status.InstanceId);

        spec.Labels["team"] = "b";
        var relabelled = await ApplyAsync(spec);
        Assert.True(relabelled.Revision > running.Revision);
        Assert.Equal("b", relabelled.Labels["team"]);
        Assert.Equal(running.Status.InstanceId, relabelled.Status.InstanceId); // a label is no reason to restart
    }

    [Fact]
    public async Task A_deleted_workload_is_stopped_said_so_to_watchers_and_can_be_created_afresh()
    {
        await ApplyAsync(Shell("phoenix", "exec sleep 300"));
        var first = await RunningAsync("phoenix", 1);
        using var watch = Client.WatchWorkloads(new WatchWorkloadsRequest { Name = "phoenix" });
        await watch.ResponseHeadersAsync;
        await Client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = "phoenix" });
        using var cts = new CancellationTokenSource(Timeout);
        Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
        Assert.Equal(Phase.Stopped, watch.ResponseStream.Current.Workload.Status.Phase);
        Assert.Equal("deleted", watch.ResponseStream.Current.Workload.Status.Message);
        Assert.Empty(await LiveInstancesAsync("phoenix"));

        // Created again under the same name: a new instance, not the old launch answered again.
        await ApplyAsync(Shell("phoenix", "exec sleep 300"));
        var again = await RunningAsync("phoenix", 1);
        Assert.NotEqual(first.Status.InstanceId, again.Status.InstanceId);
        Assert.NotEqual(first.Status.TraceId, again.Status.TraceId);
        Assert.Single(await LiveInstancesAsync("phoenix"));
    }

    [Fact]
    public async Task On_failure_stops_after_a_clean_exit_and_never_does_not_restart()
    {
        await ApplyAsync(Shell("clean", "sleep 0.3; exit 0", new RestartPolicy { Mode = RestartPolicy.Types.Mode.OnFailure }));
        var stopped = await WaitAsync("clean", w => w.Status.Phase == Phase.Stopped, "clean to stop");
        Assert.Equal(0, stopped.Status.LastExit.ExitCode);
        Assert.Equal(1, stopped.Status.Generation);

        await ApplyAsync(Shell("once", "sleep 0.3; exit 2", new RestartPolicy { Mode = RestartPolicy.Types.Mode.Never }));
        var failed = await WaitAsync("once", w => w.Status.Phase == Phase.Failed, "once to fail");
        Assert.Equal(2, failed.Status.LastExit.ExitCode);
        await Task.Delay(1000);
        Assert.Equal(1, (await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "once" })).Status.Generation);
    }
}

public sealed class BadInputTests : SupervisorTestBase
{
    public static TheoryData<string, string> Cases => new()
    {
        { """{"name":"","launch":{"template":"sleeper"}}""", "workload.name" },
        { """{"name":"Bad_Name","launch":{"template":"sleeper"}}""", "workload.name" },
        { """{"name":"ok"}""", "workload.launch" },
        { """{"name":"ok","launch":{"template":""}}""", "workload.launch.template" },
        { """{"name":"ok","launch":{"process":{"args":["x"]}}}""", "workload.launch.process.executable" },
        { """{"name":"ok","launch":{"template":"sleeper"},"restartPolicy":{"initialBackoff":"-1s"}}""", "workload.restart_policy.initial_backoff" },
        { """{"name":"ok","launch":{"template":"sleeper"},"restartPolicy":{"initialBackoff":"10s","maxBackoff":"5s"}}""", "workload.restart_policy.max_backoff" },
        { """{"name":"ok","launch":{"template":"sleeper"},"restartPolicy":{"cooloff":"0s"}}""", "workload.restart_policy.cooloff" },
        { """{"name":"ok","launch":{"template":"sleeper"},"restartPolicy":{"maxRestarts":-1}}""", "workload.restart_policy.max_restarts" },
        { """{"name":"ok","launch":{"template":"sleeper"},"restartPolicy":{"jitter":2}}""", "workload.restart_policy.jitter" },
        { """{"name":"ok","launch":{"template":"sleeper"},"restartPolicy":{"multiplier":0.5}}""", "workload.restart_policy.multiplier" },
        { """{"name":"ok","launch":{"template":"sleeper"},"stopGrace":"-2s"}""", "workload.stop_grace" },
        { """{"name":"ok","launch":{"template":"sleeper"},"health":{"heartbeatTimeout":"-1s"}}""", "workload.health.heartbeat_timeout" },
        { """{"name":"ok","launch":{"template":"sleeper"},"health":{"heartbeatFile":"relative"}}""", "workload.health.heartbeat_file" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Bad_workloads_are_refused_with_the_field_and_nothing_is_kept(string json, string field)
    {
        var workload = Google.Protobuf.JsonParser.Default.Parse<Workload>(json);
        var error = await AssertStatus(Grpc.Core.StatusCode.InvalidArgument, ApplyAsync(workload));
        Assert.Contains(field + ":", error.Status.Detail);
        Assert.Empty((await Client.ListWorkloadsAsync(new ListWorkloadsRequest())).Workloads);
    }

    [Fact]
    public async Task An_unknown_template_is_not_found_and_not_created()
    {
        await AssertStatus(Grpc.Core.StatusCode.NotFound, ApplyAsync(new Workload { Name = "ghost", Launch = new Launcher.V1.LaunchSpec { Template = "nosuch" } }), "nosuch");
        await AssertStatus(Grpc.Core.StatusCode.NotFound, Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "ghost" }).ResponseAsync);
        Assert.Empty(await LiveInstancesAsync("ghost"));
    }

    [Fact]
    public async Task Changing_the_launch_spec_while_it_restarts_is_refused_and_nothing_changes()
    {
        var slow = new RestartPolicy { InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)), MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(60)) };
        await ApplyAsync(Shell("flappy", "exit 1", slow));
        var backing = await WaitAsync("flappy", w => w.Status.Phase == Phase.BackingOff, "flappy to back off");
        await AssertStatus(Grpc.Core.StatusCode.FailedPrecondition, ApplyAsync(Shell("flappy", "sleep 300", slow)), "restarting");
        var after = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "flappy" });
        Assert.Equal("exit 1", after.Launch.Process.Args[1]);
        Assert.Equal(backing.Revision, after.Revision);
        // A policy change alone is fine while it backs off.
        await ApplyAsync(Shell("flappy", "exit 1", WithStable()));
    }

    private static RestartPolicy WithStable() => new()
    {
        InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
        MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(60)),
        StableAfter = Duration.FromTimeSpan(TimeSpan.FromSeconds(5)),
    };

    [Fact]
    public async Task An_update_to_an_unknown_template_is_refused_and_the_workload_keeps_its_previous_spec()
    {
        await ApplyAsync(new Workload { Name = "templated", Launch = new Launcher.V1.LaunchSpec { Template = "sleeper" } });
        await RunningAsync("templated", 1);
        await AssertStatus(Grpc.Core.StatusCode.NotFound, ApplyAsync(new Workload { Name = "templated", Launch = new Launcher.V1.LaunchSpec { Template = "nosuch" } }),
            "keeps its previous launch spec");
        var after = await WaitAsync("templated", w => w.Status.Phase == Phase.Running, "templated running again");
        Assert.Equal("sleeper", after.Launch.Template);
        var live = Assert.Single(await LiveInstancesAsync("templated"));
        Assert.Equal("sleeper", live.Template);
    }

    [Fact]
    public async Task Missing_things_and_bad_names()
    {
        await AssertStatus(Grpc.Core.StatusCode.NotFound, Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "nosuch" }).ResponseAsync);
        await AssertStatus(Grpc.Core.StatusCode.NotFound, Client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = "nosuch" }).ResponseAsync);
        await AssertStatus(Grpc.Core.StatusCode.NotFound, Client.RestartWorkloadAsync(new RestartWorkloadRequest { Name = "nosuch" }).ResponseAsync);
        await AssertStatus(Grpc.Core.StatusCode.InvalidArgument, Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "Not A Name" }).ResponseAsync, "name");
        await AssertStatus(Grpc.Core.StatusCode.InvalidArgument, Client.ListWorkloadsAsync(new ListWorkloadsRequest { PageToken = "nope" }).ResponseAsync, "page_token");
    }
}
