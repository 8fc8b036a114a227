using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Platform.Launcher.V1;

namespace Platform.Launcher.Tests;

public class BadInputTests : LauncherTestBase
{
    private static LaunchRequest Process(string executable, params string[] args) =>
        new() { Process = new ProcessSpec { Executable = executable, Args = { args } } };

    [Fact]
    public async Task Every_bad_launch_gets_a_precise_status_and_starts_nothing()
    {
        var notExecutable = Path.Combine(DataDirectory, "script.sh");
        File.WriteAllText(notExecutable, "#!/bin/sh\n");

        await AssertStatus(StatusCode.NotFound, Client.LaunchAsync(new LaunchRequest { Template = "nope" }).ResponseAsync, "template 'nope'");
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchAsync(new LaunchRequest()).ResponseAsync, "template name or a process");
        await AssertStatus(StatusCode.NotFound, Client.LaunchAsync(Process("/nonexistent/agent")).ResponseAsync);
        await AssertStatus(StatusCode.NotFound, Client.LaunchAsync(Process("no-such-agent-on-path")).ResponseAsync);
        await AssertStatus(StatusCode.PermissionDenied, Client.LaunchAsync(Process(notExecutable)).ResponseAsync, "not executable");
        await AssertStatus(StatusCode.PermissionDenied, Client.LaunchAsync(Process("/tmp")).ResponseAsync, "directory");
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchAsync(new LaunchRequest { Template = "sleeper", Env = { ["BAD-NAME"] = "x" } }).ResponseAsync, "env[BAD-NAME]");
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchAsync(new LaunchRequest { Template = "sleeper", Env = { ["1X"] = "x" } }).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchAsync(Process("sleep", Enumerable.Repeat("1", 2000).ToArray())).ResponseAsync, "args");
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchAsync(Process("sleep", new string('x', 40_000))).ResponseAsync, "args");
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchAsync(new LaunchRequest { Process = new ProcessSpec { Executable = "sleep", WorkingDirectory = "/nonexistent" } }).ResponseAsync, "working_directory");
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchAsync(new LaunchRequest { Template = "sleeper", StopGrace = Duration.FromTimeSpan(TimeSpan.FromSeconds(-1)) }).ResponseAsync, "stop_grace");

        Assert.Empty((await Client.ListInstancesAsync(new ListInstancesRequest())).Instances);
        Assert.False(Directory.Exists(Path.Combine(DataDirectory, "instances")) && Directory.EnumerateDirectories(Path.Combine(DataDirectory, "instances")).Any());
    }

    [Fact]
    public async Task A_workload_name_follows_the_one_rule_and_a_derived_one_is_made_into_a_name()
    {
        await AssertStatus(StatusCode.InvalidArgument, Client.LaunchAsync(new LaunchRequest { Template = "sleeper", Workload = "My Agent" }).ResponseAsync, "workload");
        // An executable whose file name is not a workload name: the instance's workload is made from it.
        var executable = Path.Combine(DataDirectory, "My_Agent.v2");
        File.Copy("/bin/sleep", executable);
        File.SetUnixFileMode(executable, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        var instance = await Client.LaunchAsync(Process(executable, "300"));
        Assert.Equal("my-agent-v2", instance.Workload);
    }

    [Fact]
    public async Task Unknown_and_malformed_instance_ids_are_not_found_and_invalid()
    {
        var unknown = System.Ulid.NewUlid().ToString();
        await AssertStatus(StatusCode.NotFound, Client.GetInstanceAsync(new GetInstanceRequest { Id = unknown }).ResponseAsync);
        await AssertStatus(StatusCode.NotFound, Client.StopInstanceAsync(new StopInstanceRequest { Id = unknown }).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.GetInstanceAsync(new GetInstanceRequest { Id = "x" }).ResponseAsync);
        using var logs = Client.StreamLogs(new StreamLogsRequest { Id = unknown });
        await AssertStatus(StatusCode.NotFound, logs.ResponseStream.MoveNext(CancellationToken.None));
    }
}

public class DisallowedCommandsTests : LauncherTestBase
{
    protected override bool AllowArbitraryCommands => false;

    [Fact]
    public async Task Arbitrary_commands_are_refused_unless_allowed_but_templates_run()
    {
        await AssertStatus(StatusCode.PermissionDenied,
            Client.LaunchAsync(new LaunchRequest { Process = new ProcessSpec { Executable = "sleep", Args = { "1" } } }).ResponseAsync,
            "AllowArbitraryCommands");

        var instance = await LaunchAsync("sleeper");
        Assert.Equal(Instance.Types.State.Running, instance.State);
    }
}
