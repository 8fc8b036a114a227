using Platform.AppHost.Hosting;

namespace Platform.AppHost.Tests;

/// <summary>The engine against real processes (/bin/sh, sleep) and real files.</summary>
public sealed class OrchestratorTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);
    private readonly string _dir = Directory.CreateTempSubdirectory("apphost-test-").FullName;
    private readonly StringWriter _output = new();
    private readonly List<string> _fatal = [];

    private DistributedApplicationBuilder NewBuilder() => DistributedApplication.CreateBuilder([]);

    private Orchestrator Start(DistributedApplicationBuilder builder, int maxFailedStarts = 5)
    {
        var options = builder.Options with
        {
            StateDirectory = Path.Combine(_dir, "state"),
            Output = TextWriter.Synchronized(_output),
            Color = false,
            MaxFailedStarts = maxFailedStarts,
            StopAdoptedOrphans = false, // this test process has children of other tests
            Restarts = AppHostOptions.DefaultRestarts with { InitialBackoff = TimeSpan.FromMilliseconds(50), MaxBackoff = TimeSpan.FromSeconds(1) },
        };
        var orchestrator = new Orchestrator(builder.Build().Model, options, message => { lock (_fatal) _fatal.Add(message); });
        orchestrator.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
        return orchestrator;
    }

    private static Task WaitAsync(Orchestrator orchestrator, Func<Orchestrator, bool> condition) =>
        orchestrator.WaitForAsync(condition, new CancellationTokenSource(Timeout).Token);

    /// <summary>Polls a fact the engine does not signal (a file a process writes).</summary>
    private static async Task Eventually(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Delay(20);
        }
    }

    private string Sh(string name) => Path.Combine(_dir, name);

    [Fact]
    public async Task A_resource_starts_only_after_what_it_waits_for_is_healthy()
    {
        var builder = NewBuilder();
        var ready = Sh("a-ready");
        var a = builder.AddExecutable("a", "/bin/sh", _dir, "-c", $"sleep 0.7; touch {ready}; exec sleep 300")
            .WithHealthCheck(_ => Task.FromResult(File.Exists(ready)));
        builder.AddExecutable("b", "/bin/sh", _dir, "-c", $"touch {Sh("b-started")}; exec sleep 300").WaitFor(a);

        await using var orchestrator = Start(builder);
        await WaitAsync(orchestrator, o => o["a"].State == ResourceState.Running);
        Assert.Equal(ResourceState.Waiting, orchestrator["b"].State);
        Assert.False(File.Exists(Sh("b-started")));

        await WaitAsync(orchestrator, o => o["b"].IsReady);
        await Eventually(() => File.Exists(Sh("b-started")));

        Assert.True(File.GetLastWriteTimeUtc(Sh("b-started")) >= File.GetLastWriteTimeUtc(ready));
    }

    [Fact]
    public async Task A_resource_that_is_killed_is_restarted_with_a_new_pid_and_the_others_are_left_alone()
    {
        var builder = NewBuilder();
        builder.AddExecutable("worker", "/bin/sh", _dir, "-c", $"echo run >> {Sh("runs")}; exec sleep 300");
        builder.AddExecutable("bystander", "sleep", _dir, "300");

        await using var orchestrator = Start(builder);
        await WaitAsync(orchestrator, o => o["worker"].IsReady && o["bystander"].IsReady);
        var first = orchestrator["worker"].Pid!.Value;
        var bystander = orchestrator["bystander"].Pid;

        Platform.ProcessControl.ProcessTree.Signal(Platform.ProcessControl.ProcFs.Identify(first)!.Value, Platform.ProcessControl.ProcessTree.SIGKILL);

        await WaitAsync(orchestrator, o => o["worker"].Restarts == 1 && o["worker"].IsReady && o["worker"].Pid != first);
        await Eventually(() => File.ReadAllLines(Sh("runs")).Length == 2);
        Assert.Equal(bystander, orchestrator["bystander"].Pid);
        Assert.Equal(0, orchestrator["bystander"].Restarts);
        Assert.Contains("worker: exited unexpectedly with signal 9", _output.ToString());
    }

    [Fact]
    public async Task Stopping_kills_the_whole_tree_even_children_that_ignore_SIGTERM_or_escaped_with_setsid()
    {
        var builder = NewBuilder();
        // SIGTERM ignored by the shell and (inherited) by its children; one child in a session of its own.
        builder.AddExecutable("stubborn", "/bin/sh", _dir, "-c", "trap '' TERM; sleep 300 & setsid sleep 301 & sleep 302 & wait")
            .WithStopGrace(TimeSpan.FromMilliseconds(300));

        var orchestrator = Start(builder);
        await WaitAsync(orchestrator, o => o["stubborn"].IsReady);
        var root = orchestrator["stubborn"].Pid!.Value;
        List<Platform.ProcessControl.ProcessIdentity> tree = [];
        for (var i = 0; i < 100 && tree.Count < 4; i++)
        {
            await Task.Delay(20);
            tree = Platform.ProcessControl.ProcessTree.Snapshot(root);
        }
        Assert.Equal(4, tree.Count);

        await orchestrator.StopAsync(CancellationToken.None);

        Assert.DoesNotContain(tree, Platform.ProcessControl.ProcFs.IsAlive);
        Assert.Equal(ResourceState.Finished, orchestrator["stubborn"].State);
        Assert.Contains("killed 4 process(es)", _output.ToString());
        await orchestrator.DisposeAsync();
    }

    [Fact]
    public async Task A_resource_that_cannot_be_launched_is_a_fatal_error_with_a_clear_message()
    {
        var builder = NewBuilder();
        builder.AddExecutable("broken", "/nonexistent/agent", _dir);

        await using var orchestrator = Start(builder);
        await WaitAsync(orchestrator, o => o.Failure is not null);
        Assert.Equal(ResourceState.FailedToStart, orchestrator["broken"].State);

        Assert.Equal("broken failed to start: executable '/nonexistent/agent' was not found", Assert.Single(_fatal));
        Assert.Contains("apphost: error: broken failed to start", _output.ToString());
    }

    [Fact]
    public async Task A_resource_that_keeps_exiting_before_it_is_healthy_is_given_up_on()
    {
        var builder = NewBuilder();
        builder.AddExecutable("crashy", "/bin/sh", _dir, "-c", "exit 3").WithHealthCheck(_ => Task.FromResult(false));

        await using var orchestrator = Start(builder, maxFailedStarts: 3);
        await WaitAsync(orchestrator, o => o.Failure is not null);

        Assert.StartsWith("crashy exited 3 times without becoming healthy (last exit code 3)", Assert.Single(_fatal));
        Assert.Equal(2, orchestrator["crashy"].Restarts);
    }

    [Fact]
    public async Task The_state_file_lists_every_resource_with_state_health_pid_and_endpoints()
    {
        var builder = NewBuilder();
        builder.AddExecutable("agent", "sleep", _dir, "300").WithHttpEndpoint();

        await using var orchestrator = Start(builder);
        await WaitAsync(orchestrator, o => o["agent"].State == ResourceState.Running);
        await WaitAsync(orchestrator, o => File.ReadAllText(o.StateFilePath).Contains("\"Running\""));

        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(orchestrator.StateFilePath));
        Assert.Equal(Environment.ProcessId, json.RootElement.GetProperty("pid").GetInt32());
        var agent = Assert.Single(json.RootElement.GetProperty("resources").EnumerateArray());
        Assert.Equal("agent", agent.GetProperty("name").GetString());
        Assert.Equal("Running", agent.GetProperty("state").GetString());
        Assert.Equal(orchestrator["agent"].Pid, agent.GetProperty("pid").GetInt32());
        Assert.Equal(0, agent.GetProperty("restarts").GetInt32());
        Assert.StartsWith("http://127.0.0.1:", agent.GetProperty("endpoints").GetProperty("http").GetString());
    }

    [Fact]
    public async Task Run_returns_exit_code_1_when_a_resource_cannot_start()
    {
        var builder = NewBuilder();
        builder.AddExecutable("broken", "/nonexistent/agent", _dir);
        var app = builder.Build();
        var options = app.Options with { StateDirectory = Path.Combine(_dir, "state"), Output = TextWriter.Synchronized(_output), StopAdoptedOrphans = false };

        var code = await new DistributedApplication(app.Model, options).RunAsync().WaitAsync(Timeout);

        Assert.Equal(1, code);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
