using Grpc.Core;
using Google.Protobuf.WellKnownTypes;
using Platform.ProcessControl;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Tests;

public sealed class SupervisorRestartTests : SupervisorTestBase
{
    [Fact]
    public async Task SIGKILLed_mid_backoff_the_supervisor_resumes_its_clock_adopts_what_runs_and_starts_no_duplicate()
    {
        await ApplyAsync(Shell("steady", "exec sleep 300"));
        var steady = await RunningAsync("steady", 1);
        var policy = new RestartPolicy { InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(4)), MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(60)) };
        await ApplyAsync(Shell("crashy", "sleep 0.2; exit 1", policy));
        var backing = await WaitAsync("crashy", w => w.Status.Phase == Phase.BackingOff, "crashy to back off");
        var due = backing.Status.NextRestartTime.ToDateTimeOffset();

        await SupervisorProcess.KillAsync();
        await Task.Delay(500);
        await StartSupervisorAsync();

        // The running workload is adopted: same instance, same generation, nothing new launched.
        var adopted = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "steady" });
        Assert.Equal(steady.Status.InstanceId, adopted.Status.InstanceId);
        Assert.Equal(1, adopted.Status.Generation);
        Assert.Single(await LiveInstancesAsync("steady"));

        // The backoff goes on from where it was: still backing off, generation 2 starts at the stored time.
        var resumed = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "crashy" });
        Assert.Equal(Phase.BackingOff, resumed.Status.Phase);
        Assert.Equal(due, resumed.Status.NextRestartTime.ToDateTimeOffset());
        // Not before its time (the clock was not reset by the restart), and then it starts.
        while (DateTimeOffset.UtcNow < due - TimeSpan.FromMilliseconds(300))
        {
            var generation = (await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "crashy" })).Status.Generation;
            // Judged by when the answer arrived: a call slowed past the due time by a loaded machine may see the start.
            if (DateTimeOffset.UtcNow < due - TimeSpan.FromMilliseconds(300)) Assert.Equal(1, generation);
            await Task.Delay(50);
        }
        var second = await WaitAsync("crashy", w => w.Status.Generation == 2, "crashy generation 2");
        Assert.Equal(2, second.Status.Generation);
        await Task.Delay(500);
        Assert.True((await LiveInstancesAsync("crashy")).Count <= 1);
    }

    [Fact]
    public async Task A_workloads_history_lists_its_starts_and_exits_newest_first_in_pages_and_survives_a_SIGKILL_of_the_supervisor()
    {
        var quick = new RestartPolicy { InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)) };
        await ApplyAsync(Shell("historic", "exec sleep 300", quick));
        var first = await RunningAsync("historic", 1);
        ProcessTree.Signal(ProcFs.Identify((int)first.Status.Pid)!.Value, 9);
        var second = await WaitAsync("historic", w => w.Status.Phase == Phase.Running && w.Status.Generation >= 2, "historic restarted");
        await SupervisorProcess.KillAsync();
        await StartSupervisorAsync();

        // The restarted supervisor adopts the running instance and says so in the history once it has reconciled, which
        // may be a moment after it serves: wait for that line, so the history no longer grows while it is paged below.
        var all = await Testing.Eventually.ValueAsync(
            async () => await Client.ListWorkloadHistoryAsync(new ListWorkloadHistoryRequest { Name = "historic" }),
            h => h.Entries.Any(l => l.Event == "adopted"), Timeout, "the adoption line after the supervisor's restart");
        Assert.Equal("", all.NextPageToken);
        var lines = all.Entries.ToList();
        // Newest first: the adoption of generation 2 by the restarted supervisor, the restart's start, the exit of
        // generation 1 (killed by signal 9), the first start.
        var adopted = Assert.Single(lines, l => l.Event == "adopted");
        Assert.Equal(0, lines.IndexOf(adopted));
        Assert.Equal(second.Status.Generation, adopted.Generation);
        Assert.Contains(second.Status.InstanceId, adopted.Detail);
        var started = lines.Where(l => l.Event == "started").ToList();
        Assert.Equal([second.Status.Generation, 1L], started.Select(l => l.Generation));
        var exit = Assert.Single(lines, l => l.Event == "exited");
        Assert.Equal(1, exit.Generation);
        Assert.Contains("9", exit.Detail);
        Assert.True(lines.IndexOf(started[0]) < lines.IndexOf(exit) && lines.IndexOf(exit) < lines.IndexOf(started[1]), string.Join("; ", lines.Select(l => l.Event)));
        Assert.Equal(lines.OrderByDescending(l => l.Sequence).Select(l => l.Sequence), lines.Select(l => l.Sequence));
        Assert.Contains(first.Status.InstanceId, started[1].Detail);

        // Paged one at a time: the same lines in the same order, each once.
        var paged = new List<HistoryEntry>();
        var token = "";
        do
        {
            var page = await Client.ListWorkloadHistoryAsync(new ListWorkloadHistoryRequest { Name = "historic", PageSize = 1, PageToken = token });
            paged.AddRange(page.Entries);
            token = page.NextPageToken;
        } while (token.Length > 0);
        Assert.Equal(lines.Select(l => l.Sequence), paged.Select(l => l.Sequence));

        await AssertStatus(StatusCode.NotFound, Client.ListWorkloadHistoryAsync(new ListWorkloadHistoryRequest { Name = "nobody" }).ResponseAsync, "nobody");
        await AssertStatus(StatusCode.InvalidArgument, Client.ListWorkloadHistoryAsync(new ListWorkloadHistoryRequest { Name = "historic", PageToken = "garbage" }).ResponseAsync, "page_token");
        await AssertStatus(StatusCode.InvalidArgument, Client.ListWorkloadHistoryAsync(new ListWorkloadHistoryRequest { Name = "historic", PageSize = 5000 }).ResponseAsync, "page_size");
        await AssertStatus(StatusCode.InvalidArgument, Client.ListWorkloadHistoryAsync(new ListWorkloadHistoryRequest { Name = "Not A Name" }).ResponseAsync, "name");
    }

    [Fact]
    public async Task A_stray_instance_of_a_workload_is_stopped_after_a_restart_of_the_supervisor()
    {
        await ApplyAsync(Shell("solo", "exec sleep 300"));
        var solo = await RunningAsync("solo", 1);
        await SupervisorProcess.KillAsync();
        // Something launched a second instance with the workload's label while the supervisor was down.
        var stray = await LauncherClient.LaunchAsync(new Launcher.V1.LaunchRequest
        {
            Process = new Launcher.V1.ProcessSpec { Executable = "sleep", Args = { "300" } },
            Workload = "solo",
            Labels = { [WorkloadActorLabels.Workload] = "solo", [WorkloadActorLabels.Generation] = "7" },
        });
        await StartSupervisorAsync();
        await Testing.Eventually.ValueAsync(() => Task.FromResult(ProcFs.Identify((int)stray.Pid)), p => p is null, Timeout, "the stray to be stopped");
        var live = await LiveInstancesAsync("solo");
        Assert.Equal([solo.Status.InstanceId], live.Select(i => i.Id));
    }

    [Fact]
    public async Task The_trace_id_stays_the_same_across_restarts_of_the_workload_and_of_the_supervisor()
    {
        await ApplyAsync(Shell("traced", "exec sleep 300", new RestartPolicy { InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)) }));
        var first = await RunningAsync("traced", 1);
        var traceId = first.Status.TraceId;
        Assert.Equal(32, traceId.Length);
        Assert.Contains(await Testing.ProcessEnvironment.ReadAsync(first.Status.Pid), e => e.StartsWith($"TRACEPARENT=00-{traceId}-", StringComparison.Ordinal));

        ProcessTree.Signal(ProcFs.Identify((int)first.Status.Pid)!.Value, 9);
        var second = await RunningAsync("traced", 2);
        Assert.Equal(traceId, second.Status.TraceId);
        var secondParent = (await Testing.ProcessEnvironment.ReadAsync(second.Status.Pid)).Single(e => e.StartsWith("TRACEPARENT=", StringComparison.Ordinal));
        Assert.StartsWith($"TRACEPARENT=00-{traceId}-", secondParent);

        await SupervisorProcess.KillAsync();
        await StartSupervisorAsync();
        var afterRestart = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "traced" });
        Assert.Equal(traceId, afterRestart.Status.TraceId);
        ProcessTree.Signal(ProcFs.Identify((int)second.Status.Pid)!.Value, 9);
        var third = await RunningAsync("traced", 3);
        Assert.Equal(traceId, third.Status.TraceId);
        var thirdParent = (await Testing.ProcessEnvironment.ReadAsync(third.Status.Pid)).Single(e => e.StartsWith("TRACEPARENT=", StringComparison.Ordinal));
        Assert.StartsWith($"TRACEPARENT=00-{traceId}-", thirdParent);
        Assert.NotEqual(secondParent, thirdParent); // a new span per attempt, in the same trace
        Assert.Contains("PLATFORM_GENERATION=3", await Testing.ProcessEnvironment.ReadAsync(third.Status.Pid));
    }
}

/// <summary>The labels the supervisor puts on its instances (as the Launcher shows them).</summary>
internal static class WorkloadActorLabels
{
    public const string Workload = "platform.supervisor/workload";
    public const string Generation = "platform.supervisor/generation";
}
