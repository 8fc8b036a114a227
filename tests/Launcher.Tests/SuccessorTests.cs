using Grpc.Core;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Launcher.Tests;

/// <summary>ArmSuccessor: a launch the launcher makes by itself the moment an instance exits on its own.</summary>
public sealed class SuccessorTests : LauncherTestBase
{
    private static LaunchRequest Successor(string requestId, string template = "sleeper") => new()
    {
        Template = template,
        RequestId = requestId,
        Workload = "follower",
        Labels = { ["generation"] = "2" },
    };

    private string InstancesDirectory => Path.Combine(DataDirectory, "instances");

    private Task<Instance> ExitedAsync(string id) =>
        Eventually.ValueAsync(() => Client.GetInstanceAsync(new GetInstanceRequest { Id = id }).ResponseAsync,
            i => i.State == Instance.Types.State.Exited, Timeout, $"instance {id} to exit");

    private async Task<InstanceEvent> NextAsync(AsyncServerStreamingCall<InstanceEvent> watch)
    {
        using var cts = new CancellationTokenSource(Timeout);
        Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
        return watch.ResponseStream.Current;
    }

    [Fact]
    public async Task A_crash_starts_the_armed_successor_before_the_exit_is_published_and_the_exit_names_it()
    {
        var first = await LaunchAsync("sleeper");
        var armed = await Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id, Successor = Successor("next-1") });
        Assert.True(armed.SuccessorArmed);
        Assert.Equal(first.Id, armed.Id);
        using var watch = Client.WatchInstanceEvents(new WatchInstanceEventsRequest());
        await watch.ResponseHeadersAsync;

        ProcessTree.Signal(ProcFs.Identify((int)first.Pid)!.Value, ProcessTree.SIGKILL);
        var started = await NextAsync(watch);
        Assert.Equal(InstanceEvent.Types.Type.Started, started.Type);
        Assert.Equal("2", started.Instance.Labels["generation"]);
        var exited = await NextAsync(watch);
        Assert.Equal((InstanceEvent.Types.Type.Exited, first.Id), (exited.Type, exited.Instance.Id));
        Assert.Equal(9, exited.Instance.Signal);
        Assert.Equal(started.Instance.Id, exited.Instance.SuccessorId);
        Assert.Equal(started.Instance.Id, exited.Successor.Id);
        Assert.True(started.Instance.StartTime.ToDateTime() >= exited.Instance.ExitTime.ToDateTime());

        // A real, running process with its own output files; the same request id returns it and starts nothing more.
        Assert.NotNull(ProcFs.Identify((int)started.Instance.Pid));
        Assert.True(File.Exists(Path.Combine(InstancesDirectory, started.Instance.Id, "stdout.log")));
        var again = await Client.LaunchAsync(Successor("next-1"));
        Assert.Equal(started.Instance.Id, again.Id);
        Assert.Single((await Client.ListInstancesAsync(new ListInstancesRequest { Workload = "follower" })).Instances);
        Assert.False((await Client.GetInstanceAsync(new GetInstanceRequest { Id = first.Id })).SuccessorArmed);
    }

    [Fact]
    public async Task A_successor_that_dies_at_once_is_reported_after_its_predecessor_and_a_repeated_launch_sees_it_exited()
    {
        var first = await LaunchAsync("sleeper");
        var doomed = new LaunchRequest { Process = new ProcessSpec { Executable = "/bin/sh", Args = { "-c", "exit 4" } }, RequestId = "doomed", Workload = "follower" };
        await Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id, Successor = doomed });
        using var watch = Client.WatchInstanceEvents(new WatchInstanceEventsRequest());
        await watch.ResponseHeadersAsync;

        ProcessTree.Signal(ProcFs.Identify((int)first.Pid)!.Value, ProcessTree.SIGKILL);
        var events = new List<InstanceEvent> { await NextAsync(watch), await NextAsync(watch), await NextAsync(watch) };
        var successorId = events[0].Instance.Id;
        Assert.Equal(
            [(InstanceEvent.Types.Type.Started, successorId), (InstanceEvent.Types.Type.Exited, first.Id), (InstanceEvent.Types.Type.Exited, successorId)],
            events.Select(e => (e.Type, e.Instance.Id)));
        Assert.Equal(4, events[2].Instance.ExitCode);
        // The same request id again: that instance, as it is now (exited), and nothing new started.
        var again = await Client.LaunchAsync(doomed);
        Assert.Equal((successorId, Instance.Types.State.Exited), (again.Id, again.State));
    }

    [Fact]
    public async Task A_stop_asked_for_starts_no_successor_and_leaves_no_prepared_output_behind()
    {
        var first = await LaunchAsync("sleeper");
        await Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id, Successor = Successor("next-2") });
        Assert.Equal(2, Directory.GetDirectories(InstancesDirectory).Length); // the successor's output is made at arming

        var stopped = await Client.StopInstanceAsync(new StopInstanceRequest { Id = first.Id });
        Assert.Equal(Instance.Types.State.Exited, stopped.State);
        Assert.Equal("", stopped.SuccessorId);
        // No wait for "nothing": a successor is started before the exit is published, and StopInstance answers after it.
        Assert.Empty((await Client.ListInstancesAsync(new ListInstancesRequest { Workload = "follower" })).Instances);
        Assert.Equal([first.Id], Directory.GetDirectories(InstancesDirectory).Select(Path.GetFileName));
    }

    [Fact]
    public async Task On_failure_only_a_clean_exit_starts_nothing_and_a_failed_one_starts_the_successor()
    {
        // exit3 ends with code 3 after 0.2 s: a failure.
        var failing = await LaunchAsync("exit3");
        await Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = failing.Id, Successor = Successor("after-failure"), OnFailureOnly = true });
        var failed = await ExitedAsync(failing.Id);
        Assert.NotEqual("", failed.SuccessorId);

        var clean = await Client.LaunchAsync(new LaunchRequest { Process = new ProcessSpec { Executable = "/bin/sh", Args = { "-c", "sleep 0.3; exit 0" } } });
        await Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = clean.Id, Successor = Successor("after-success"), OnFailureOnly = true });
        var ended = await ExitedAsync(clean.Id);
        Assert.Equal(0, ended.ExitCode);
        Assert.Equal("", ended.SuccessorId); // decided before the EXITED event was published: nothing can follow it
        Assert.Equal([failed.SuccessorId], (await Client.ListInstancesAsync(new ListInstancesRequest { Workload = "follower" })).Instances.Select(i => i.Id));
        Assert.Equal(new[] { failing.Id, clean.Id, failed.SuccessorId }.Order(), Directory.GetDirectories(InstancesDirectory).Select(Path.GetFileName).Order());
    }

    [Fact]
    public async Task Disarming_or_arming_again_replaces_the_successor()
    {
        var first = await LaunchAsync("sleeper");
        await Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id, Successor = Successor("replaced") });
        var disarmed = await Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id });
        Assert.False(disarmed.SuccessorArmed);
        Assert.Equal([first.Id], Directory.GetDirectories(InstancesDirectory).Select(Path.GetFileName));
        await Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id, Successor = Successor("first-choice") });
        var second = Successor("second-choice");
        second.Labels["generation"] = "3";
        await Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id, Successor = second });

        ProcessTree.Signal(ProcFs.Identify((int)first.Pid)!.Value, ProcessTree.SIGKILL);
        var exited = await ExitedAsync(first.Id);
        var successor = await Client.GetInstanceAsync(new GetInstanceRequest { Id = exited.SuccessorId });
        Assert.Equal("3", successor.Labels["generation"]);
        Assert.Single((await Client.ListInstancesAsync(new ListInstancesRequest { Workload = "follower" })).Instances);
    }

    [Fact]
    public async Task Bad_arms_are_refused_with_a_precise_status()
    {
        await AssertStatus(StatusCode.InvalidArgument, Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = "nope" }).ResponseAsync, "not an instance id");
        await AssertStatus(StatusCode.NotFound, Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = System.Ulid.NewUlid().ToString() }).ResponseAsync);
        var first = await LaunchAsync("sleeper");
        await AssertStatus(StatusCode.NotFound, Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id, Successor = Successor("x", template: "missing") }).ResponseAsync, "missing");
        await AssertStatus(StatusCode.InvalidArgument, Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id, Successor = new LaunchRequest() }).ResponseAsync);
        Assert.False((await Client.GetInstanceAsync(new GetInstanceRequest { Id = first.Id })).SuccessorArmed);

        await Client.StopInstanceAsync(new StopInstanceRequest { Id = first.Id });
        await AssertStatus(StatusCode.FailedPrecondition, Client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = first.Id, Successor = Successor("late") }).ResponseAsync, "has exited");
        Assert.Equal([first.Id], Directory.GetDirectories(InstancesDirectory).Select(Path.GetFileName)); // nothing prepared is left
    }
}
