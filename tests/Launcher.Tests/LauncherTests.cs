using Microsoft.Extensions.DependencyInjection;
using System.Diagnostics;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Platform.Launcher.V1;
using Platform.ProcessControl;

namespace Platform.Launcher.Tests;

public class LauncherTests : LauncherTestBase
{
    [Fact]
    public async Task A_tree_with_grandchildren_and_a_setsid_escaper_is_stopped_with_zero_survivors()
    {
        var instance = await LaunchAsync("tree");
        var tree = await TreeAsync(instance, 5);
        Assert.Equal(4, (await Client.GetInstanceAsync(new GetInstanceRequest { Id = instance.Id })).ChildProcessCount);

        var stopped = await Client.StopInstanceAsync(new StopInstanceRequest { Id = instance.Id });

        Assert.Equal(Instance.Types.State.Exited, stopped.State);
        Assert.Equal(15, stopped.Signal);
        Assert.DoesNotContain(tree, ProcFs.IsAlive);
        Assert.Equal(stopped, await Client.StopInstanceAsync(new StopInstanceRequest { Id = instance.Id })); // unchanged
    }

    [Fact]
    public async Task A_child_that_ignores_SIGTERM_is_killed_after_the_grace()
    {
        var instance = await LaunchAsync("stubborn");
        var tree = await TreeAsync(instance, 2);
        var clock = Stopwatch.StartNew();

        var stopped = await Client.StopInstanceAsync(new StopInstanceRequest { Id = instance.Id, Grace = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(400)) });

        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(400));
        Assert.Equal(9, stopped.Signal);
        Assert.False(stopped.HasExitCode);
        Assert.DoesNotContain(tree, ProcFs.IsAlive);
    }

    [Fact]
    public async Task Concurrent_launches_with_one_request_id_start_one_process()
    {
        var clients = Enumerable.Range(0, 8).Select(_ => new V1.Launcher.LauncherClient(Host.NewChannel())).ToList();

        var launches = await Task.WhenAll(Enumerable.Range(0, 40).Select(i =>
            clients[i % clients.Count].LaunchAsync(new LaunchRequest { Template = "sleeper", RequestId = "once", Workload = "dedup" }).ResponseAsync));

        Assert.Single(launches.Select(l => l.Id).Distinct());
        Assert.Single((await Client.ListInstancesAsync(new ListInstancesRequest { Workload = "dedup" })).Instances);
    }

    [Fact]
    public async Task Exits_are_streamed_with_their_code_as_they_happen()
    {
        using var watch = Client.WatchInstanceEvents(new WatchInstanceEventsRequest { Workload = "exit3" });
        await watch.ResponseHeadersAsync;

        var instance = await LaunchAsync("exit3");

        using var cts = new CancellationTokenSource(Timeout);
        Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
        Assert.Equal((InstanceEvent.Types.Type.Started, instance.Id), (watch.ResponseStream.Current.Type, watch.ResponseStream.Current.Instance.Id));
        Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
        var exited = watch.ResponseStream.Current;
        Assert.Equal(InstanceEvent.Types.Type.Exited, exited.Type);
        Assert.Equal(3, exited.Instance.ExitCode);
        Assert.Equal(Instance.Types.State.Exited, (await Client.GetInstanceAsync(new GetInstanceRequest { Id = instance.Id })).State);
    }

    [Fact]
    public async Task Output_goes_to_files_and_StreamLogs_serves_the_tail_and_follows()
    {
        var instance = await LaunchAsync("chatty");
        await TreeAsync(instance, 1);
        var stdout = Path.Combine(DataDirectory, "instances", instance.Id, "stdout.log");
        for (var i = 0; i < 200 && (!File.Exists(stdout) || !File.ReadAllText(stdout).Contains("hello")); i++) await Task.Delay(10);

        var tail = new List<LogEntry>();
        using (var call = Client.StreamLogs(new StreamLogsRequest { Id = instance.Id, TailLines = 2 }))
        {
            while (await call.ResponseStream.MoveNext(CancellationToken.None)) tail.Add(call.ResponseStream.Current);
        }
        Assert.Equal(["out 3", $"hello {instance.Id}", "err 2", "err 3"], tail.Select(e => e.Text));
        Assert.Equal([LogEntry.Types.Stream.Stdout, LogEntry.Types.Stream.Stdout, LogEntry.Types.Stream.Stderr, LogEntry.Types.Stream.Stderr], tail.Select(e => e.Stream));

        // An empty stream has no lines (not one empty line).
        var stderr = Path.Combine(DataDirectory, "instances", instance.Id, "stderr.log");
        var saved = File.ReadAllText(stderr);
        File.WriteAllText(stderr, "");
        using (var call = Client.StreamLogs(new StreamLogsRequest { Id = instance.Id, TailLines = 1 }))
        {
            tail.Clear();
            while (await call.ResponseStream.MoveNext(CancellationToken.None)) tail.Add(call.ResponseStream.Current);
        }
        Assert.Equal([$"hello {instance.Id}"], tail.Select(e => e.Text));
        File.WriteAllText(stderr, saved);

        // Following after a tail (as `platformctl logs -f` asks): the tail, then what is written later.
        using var follow = Client.StreamLogs(new StreamLogsRequest { Id = instance.Id, Follow = true, TailLines = 1 });
        using var cts = new CancellationTokenSource(Timeout);
        Assert.True(await follow.ResponseStream.MoveNext(cts.Token));
        Assert.Equal($"hello {instance.Id}", follow.ResponseStream.Current.Text);
        Assert.True(await follow.ResponseStream.MoveNext(cts.Token));
        Assert.Equal("err 3", follow.ResponseStream.Current.Text);
        File.AppendAllText(stdout, "appended later\n"); // as the child would
        Assert.True(await follow.ResponseStream.MoveNext(cts.Token));
        Assert.Equal("appended later", follow.ResponseStream.Current.Text);
        await Client.StopInstanceAsync(new StopInstanceRequest { Id = instance.Id });
        while (await follow.ResponseStream.MoveNext(cts.Token)) { } // ends by itself once the instance exited
    }

    [Fact]
    public async Task Get_and_List_report_live_figures_from_proc()
    {
        var instance = await LaunchAsync("tree");
        await TreeAsync(instance, 5);

        var live = await Client.GetInstanceAsync(new GetInstanceRequest { Id = instance.Id });
        var listed = (await Client.ListInstancesAsync(new ListInstancesRequest { Workload = "tree" })).Instances.Single();

        Assert.Equal(4, live.ChildProcessCount);
        Assert.True(live.RssBytes > 1024 * 1024, $"rss {live.RssBytes}");
        Assert.Equal(instance.Pid, listed.Pid);
        Assert.Equal("tree", listed.Template);
        Assert.Equal(Instance.Types.State.Running, listed.State);
    }
}

public class LogRotationTests : LauncherTestBase
{
    [Fact]
    public async Task Output_past_the_size_limit_is_rotated_and_the_child_keeps_writing_to_the_same_file()
    {
        var options = Host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<LauncherOptions>>().Value;
        options.MaxLogBytes = 4096;
        var instance = await Client.LaunchAsync(new LaunchRequest
        {
            Process = new ProcessSpec { Executable = "/bin/sh", Args = { "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.005; done" } },
        });
        var stdout = Path.Combine(DataDirectory, "instances", instance.Id, "stdout.log");
        for (var i = 0; i < 500 && (!File.Exists(stdout) || new FileInfo(stdout).Length <= 4096); i++) await Task.Delay(10);

        var (_, rotated) = Host.Services.GetRequiredService<LogRotator>().RotateAll();

        Assert.Equal(1, rotated);
        Assert.True(new FileInfo(stdout + ".1").Length > 4096);
        var lastRotated = File.ReadAllLines(stdout + ".1").Last(l => l.StartsWith("line ", StringComparison.Ordinal));
        var fresh = await Testing.Eventually.ValueAsync(() => Task.FromResult(File.ReadAllLines(stdout).Where(l => l.StartsWith("line ", StringComparison.Ordinal)).ToList()),
            lines => lines.Count > 0, Timeout, "the child to write on into the truncated file");
        Assert.NotEmpty(fresh); // the child writes on into the truncated file
        Assert.True(new FileInfo(stdout).Length < new FileInfo(stdout + ".1").Length + 4096);
        Assert.True(int.Parse(fresh[^1][5..]) > int.Parse(lastRotated[5..]));
    }
    [Fact]
    public async Task A_pass_looks_at_the_output_of_instances_that_wrote_since_the_last_and_not_at_quiet_ones()
    {
        var rotator = Host.Services.GetRequiredService<LogRotator>();
        var quiet = await Client.LaunchAsync(new LaunchRequest { Process = new ProcessSpec { Executable = "/bin/sleep", Args = { "600" } } });
        var chatty = await Client.LaunchAsync(new LaunchRequest
        {
            Process = new ProcessSpec { Executable = "/bin/sh", Args = { "-c", "while true; do echo tick; sleep 0.05; done" } },
        });
        string Output(Instance i) => Path.Combine(DataDirectory, "instances", i.Id);

        rotator.RotateAll(); // both are new to it (or the host's own pass saw them first)
        var passes = new List<List<string>>();
        for (var i = 0; i < 5; i++)
        {
            await Task.Delay(200);
            passes.Add(rotator.RotateAll().Looked);
        }

        Assert.DoesNotContain(passes, looked => looked.Contains(Output(quiet)));
        Assert.Contains(passes, looked => looked.Contains(Output(chatty))); // the host's pass may take one, not all five
    }
}

public class TraceContextTests : LauncherTestBase
{
    [Fact]
    public async Task The_child_continues_the_callers_trace_and_knows_its_instance()
    {
        const string traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
        // The caller's current span: its gRPC client propagates it as traceparent/tracestate.
        using var caller = new System.Diagnostics.Activity("caller").SetParentId($"00-{traceId}-00f067aa0ba902b7-01");
        caller.TraceStateString = "vendor=value";
        caller.Start();

        var instance = await Client.LaunchAsync(new LaunchRequest { Template = "sleeper", Workload = "traced" });
        caller.Stop();

        var environ = await Platform.Testing.ProcessEnvironment.ReadAsync(instance.Pid);
        var traceparent = Assert.Single(environ, e => e.StartsWith("TRACEPARENT=", StringComparison.Ordinal));
        Assert.Matches($"^TRACEPARENT=00-{traceId}-[0-9a-f]{{16}}-01$", traceparent);
        Assert.Contains("TRACESTATE=vendor=value", environ);
        Assert.Contains($"PLATFORM_INSTANCE_ID={instance.Id}", environ);
        Assert.Contains("PLATFORM_WORKLOAD=traced", environ);
    }
}

public class LaunchBatchTests : LauncherTestBase
{
    [Fact]
    public async Task A_batch_starts_each_launch_as_Launch_would_with_its_own_trace_and_its_own_error()
    {
        const string first = "4bf92f3577b34da6a3ce929d0e0e4736", second = "0af7651916cd43dd8448eb211c80319c";
        var request = new LaunchBatchRequest
        {
            Items =
            {
                new LaunchBatchItem { Request = new LaunchRequest { Template = "sleeper", Workload = "one" }, Traceparent = $"00-{first}-00f067aa0ba902b7-01", Tracestate = "vendor=one" },
                new LaunchBatchItem { Request = new LaunchRequest { Template = "no-such-template", Workload = "two" }, Traceparent = $"00-{second}-00f067aa0ba902b7-01" },
                new LaunchBatchItem { Request = new LaunchRequest { Template = "sleeper", Workload = "three", RequestId = "same" }, Traceparent = $"00-{second}-b7ad6b7169203331-01" },
                new LaunchBatchItem { Request = new LaunchRequest { Template = "sleeper", Workload = "three", RequestId = "same" } },
                new LaunchBatchItem { Request = new LaunchRequest { Process = new ProcessSpec { Executable = "sleep", Args = { "300" } }, Env = { ["BAD NAME"] = "x" } } },
            },
        };

        var response = await Client.LaunchBatchAsync(request);

        Assert.Equal(5, response.Results.Count);
        var (one, missing, three, again, invalid) = (response.Results[0], response.Results[1], response.Results[2], response.Results[3], response.Results[4]);
        Assert.Equal(0, one.Code);
        Assert.Equal("one", one.Instance.Workload);
        Assert.Equal((int)StatusCode.NotFound, missing.Code);
        Assert.Contains("no-such-template", missing.Message, StringComparison.Ordinal);
        Assert.Null(missing.Instance);
        Assert.Equal((int)StatusCode.InvalidArgument, invalid.Code);
        Assert.Contains("BAD NAME", invalid.Message, StringComparison.Ordinal);
        // One request_id twice in a batch: one process, the same instance twice.
        Assert.Equal(0, three.Code);
        Assert.Equal(three.Instance.Id, again.Instance.Id);
        Assert.Equal(three.Instance.Pid, again.Instance.Pid);
        var running = await Client.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running });
        Assert.Equal(new[] { one.Instance.Id, three.Instance.Id }.Order(StringComparer.Ordinal), running.Instances.Select(i => i.Id).Order(StringComparer.Ordinal));

        // Each child continues its own launch's trace, not the batch call's.
        var environ = await Platform.Testing.ProcessEnvironment.ReadAsync(one.Instance.Pid);
        Assert.Matches($"^TRACEPARENT=00-{first}-[0-9a-f]{{16}}-01$", Assert.Single(environ, e => e.StartsWith("TRACEPARENT=", StringComparison.Ordinal)));
        Assert.Contains("TRACESTATE=vendor=one", environ);
        Assert.Contains($"PLATFORM_INSTANCE_ID={one.Instance.Id}", environ);
        environ = await Platform.Testing.ProcessEnvironment.ReadAsync(three.Instance.Pid);
        Assert.Matches($"^TRACEPARENT=00-{second}-[0-9a-f]{{16}}-01$", Assert.Single(environ, e => e.StartsWith("TRACEPARENT=", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task An_empty_batch_and_one_over_the_limit_are_refused_whole()
    {
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchBatchAsync(new LaunchBatchRequest()).ResponseAsync, "at least one launch");
        var tooMany = new LaunchBatchRequest();
        for (var i = 0; i <= Platform.ServiceDefaults.BatchCalls.MaxItems; i++) tooMany.Items.Add(new LaunchBatchItem { Request = new LaunchRequest { Template = "sleeper" } });
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchBatchAsync(tooMany).ResponseAsync, "at most 1000");
        Assert.Empty((await Client.ListInstancesAsync(new ListInstancesRequest())).Instances);
    }
}
