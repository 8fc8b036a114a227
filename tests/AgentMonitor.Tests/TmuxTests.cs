using Grpc.Core;
using Platform.Monitor.V1;
using Platform.ProcessControl;
using State = Platform.Monitor.V1.AgentStatus.Types.State;

namespace Platform.AgentMonitor.Tests;

/// <summary>A real tmux server (Debian's tmux) on a socket of the test's own.</summary>
public sealed class TmuxTests : MonitorTestBase
{
    private string Socket => Path.Combine(DataDirectory, "tmux.sock");

    private async Task TmuxAsync(params string[] args)
    {
        var tmux = ChildReaper.Shared.Spawn(new SpawnRequest("tmux", ["-S", Socket, .. args],
            new Dictionary<string, string> { ["PATH"] = Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin", ["TERM"] = "xterm" }));
        var status = await tmux.Exited.WaitAsync(Timeout);
        Assert.True(status.Code == 0, $"tmux {string.Join(' ', args)}: {status}");
    }

    public override async Task DisposeAsync()
    {
        // Before the base deletes the data directory, socket and all: the server (and its panes) must go with the test.
        if (File.Exists(Socket)) await TmuxAsync("kill-server");
        await base.DisposeAsync();
    }

    private Target PaneTarget(string id, string pane)
    {
        var target = NewTarget(id, interval: TimeSpan.FromMilliseconds(200));
        target.IdleAfter = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(1));
        target.TmuxPane = new TmuxPaneProbe { Target = pane, SocketPath = Socket };
        return target;
    }

    [Fact]
    public async Task A_pane_that_goes_quiet_turns_idle_and_printing_again_turns_healthy()
    {
        // Prints for 1.5 s, is quiet for 3 s, then prints again.
        await TmuxAsync("new-session", "-d", "-s", "agents", "-x", "80", "-y", "24",
            "for i in $(seq 15); do echo working $i; sleep 0.1; done; sleep 3; while :; do echo back; sleep 0.1; done");
        await AddAsync(PaneTarget("agent", "agents:0.0"));
        var healthy = await StatusAsync("agent", State.Healthy);
        Assert.Contains("running", healthy.Detail);
        var idle = await StatusAsync("agent", State.Idle, TimeSpan.FromSeconds(10));
        Assert.Contains("no activity", idle.Detail);
        var back = await StatusAsync("agent", State.Healthy, TimeSpan.FromSeconds(10));
        Assert.True(back.LastActivityTime.ToDateTimeOffset() > idle.LastActivityTime.ToDateTimeOffset());
    }

    [Fact]
    public async Task A_pane_that_drops_to_a_shell_prompt_is_unhealthy_by_pattern()
    {
        await TmuxAsync("new-session", "-d", "-s", "agents", "-x", "80", "-y", "24",
            "echo 'Agent UI ready'; sleep 1.5; PS1='user@host:~$ ' exec bash --norc --noprofile -i");
        var target = PaneTarget("crashing", "agents:0.0");
        target.TmuxPane.UnhealthyPatterns.Add(@"^\S+@\S+:.*\$\s*$");
        target.TmuxPane.IdlePatterns.Add("waiting for input");
        await AddAsync(target);
        await StatusAsync("crashing", State.Healthy);
        var broken = await StatusAsync("crashing", State.Unhealthy, TimeSpan.FromSeconds(10));
        Assert.Contains("user@host:~$", broken.Detail);
    }

    [Fact]
    public async Task A_missing_server_or_pane_is_refused_and_a_vanished_pane_is_unhealthy()
    {
        await AssertStatus(StatusCode.FailedPrecondition, AddAsync(PaneTarget("nosrv", "agents:0.0")), "no tmux server is running");

        await TmuxAsync("new-session", "-d", "-s", "agents", "-x", "80", "-y", "24", "sleep 300");
        await AssertStatus(StatusCode.FailedPrecondition, AddAsync(PaneTarget("nopane", "agents:7.0")), "has no pane 'agents:7.0'");
        await AssertStatus(StatusCode.FailedPrecondition, AddAsync(PaneTarget("nosession", "elsewhere:0.0")), "has no pane");

        await TmuxAsync("new-window", "-d", "-t", "agents:1", "sleep 300");
        await AddAsync(PaneTarget("vanishing", "agents:1.0"));
        await StatusAsync("vanishing", State.Healthy);
        await TmuxAsync("kill-window", "-t", "agents:1");
        Assert.Contains("no pane agents:1.0", (await StatusAsync("vanishing", State.Unhealthy)).Detail);

        // The monitor keeps serving everything else.
        Assert.Equal(["vanishing"], (await Client.ListTargetsAsync(new ListTargetsRequest())).Targets.Select(t => t.Id));
    }

    [Fact]
    public async Task Many_panes_share_one_control_connection_and_the_servers_sessions_are_left_as_they_were()
    {
        await TmuxAsync("new-session", "-d", "-s", "one", "-x", "80", "-y", "24", "while :; do echo a; sleep 0.2; done");
        await TmuxAsync("new-session", "-d", "-s", "two", "-x", "100", "-y", "30", "sleep 300");
        for (var i = 1; i < 4; i++) await TmuxAsync("new-window", "-d", "-t", $"two:{i}", "sleep 300");
        await AddAsync(PaneTarget("one", "one:0.0"));
        for (var i = 0; i < 4; i++) await AddAsync(PaneTarget($"two-{i}", $"two:{i}.0"));
        await StatusAsync("one", State.Healthy);
        for (var i = 0; i < 4; i++) await StatusAsync($"two-{i}", State.Idle, TimeSpan.FromSeconds(10));

        // One tmux client process for the monitor, whatever the number of panes and probes.
        var clients = ProcFs.All().Values.Count(p => p.ParentPid == Environment.ProcessId && File.ReadAllText($"/proc/{p.Pid}/cmdline").Contains("-C\0new-session", StringComparison.Ordinal));
        Assert.Equal(1, clients);
        // The agents' windows keep their size.
        var list = ChildReaper.Shared.Spawn(new SpawnRequest("tmux", ["-S", Socket, "list-windows", "-t", "two", "-F", "#{window_width}x#{window_height}"],
            new Dictionary<string, string> { ["PATH"] = Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin" }, Stdout: StdioTarget.Pipe));
        using var reader = new StreamReader(list.StandardOutput!);
        Assert.All((await reader.ReadToEndAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries), size => Assert.Equal("100x30", size));
        await list.Exited;
    }
}
