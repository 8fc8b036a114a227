using System.Reflection;
using System.Text.Json;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Cli.Tests;

/// <summary>samples/workloads.yaml applied with platformctl: each sample shows what it is for.</summary>
public sealed class SamplesTests(CliFixture platform) : IClassFixture<CliFixture>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private static readonly string Repository = AppHostProcess.RepositoryRoot(typeof(SamplesTests).Assembly);

    private Dictionary<string, string> Env => new() { ["PLATFORM_STATE_DIR"] = platform.StateDirectory, ["PWD"] = Repository, ["PLATFORM_SAMPLES"] = platform.Work };

    private async Task<JsonElement> GetAsync(string kind, string name)
    {
        var run = await Cli.RunAsync(["get", kind, name, "-o", "json"], Env);
        Assert.True(run.Code == 0, run.ToString());
        return JsonDocument.Parse(run.Out).RootElement.Clone();
    }

    /// <summary>Polls a monitor target until its verdict is <paramref name="state"/>; a target not added yet (exit 4) is
    /// waited for.</summary>
    private Task<JsonElement> TargetStateAsync(string id, string state) =>
        Eventually.ValueAsync(async () =>
            {
                var run = await Cli.RunAsync(["get", "targets", id, "-o", "json"], Env);
                Assert.True(run.Code is 0 or 4, run.ToString());
                return run.Code == 0 ? JsonDocument.Parse(run.Out).RootElement.Clone() : default;
            },
            t => t.ValueKind == JsonValueKind.Object && Text(t, "state") == state, Timeout, $"{id} {state}");

    private static string Text(JsonElement e, params string[] path)
    {
        foreach (var p in path)
            if (!e.TryGetProperty(p, out e)) return "";
        return e.ValueKind == JsonValueKind.String ? e.GetString()! : e.GetRawText();
    }

    private static long Generation(JsonElement w) => long.TryParse(Text(w, "status", "generation"), out var g) ? g : 0;

    [Fact]
    public async Task The_samples_crash_and_restart_go_idle_ignore_SIGTERM_in_vain_and_a_rate_limited_tmux_agent_is_restarted()
    {
        var applied = await Cli.RunAsync(["apply", "-f", Path.Combine(Repository, "samples", "workloads.yaml")], Env);
        Assert.True(applied.Code == 0, applied.ToString());
        Assert.Equal(["worker", "flaky", "sleepy", "stubborn", "tmux-agent"], applied.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[0]["workload/".Length..]));

        // sleepy and tmux-agent go IDLE on their own clocks (tmux-agent for 8 s only, before its rate limit): watched from
        // now, while the rest of the test runs.
        var sleepyIdle = TargetStateAsync("supervisor/sleepy/1/health", "IDLE");
        var tmuxIdle = TargetStateAsync("supervisor/tmux-agent/1/health", "IDLE");

        // worker heartbeats its file under PLATFORM_SAMPLES (the interpolated path) and runs.
        await Eventually.ValueAsync(() => GetAsync("workload", "worker"), w => Text(w, "status", "phase") == "RUNNING", Timeout, "worker running");
        await Eventually.ValueAsync(() => Task.FromResult(File.Exists(Path.Combine(platform.Work, "worker.beat"))), b => b, Timeout, "worker's heartbeat file");

        // stubborn ignores SIGTERM: a restart still leaves none of its tree behind.
        var stubborn = await Eventually.ValueAsync(() => GetAsync("workload", "stubborn"), w => Text(w, "status", "phase") == "RUNNING", Timeout, "stubborn running");
        var pid = int.Parse(Text(stubborn, "status", "pid"), System.Globalization.CultureInfo.InvariantCulture);
        await Task.Delay(500); // its children are forked
        var tree = ProcessTree.Snapshot(pid);
        Assert.True(tree.Count >= 3, $"stubborn's tree: {string.Join(", ", tree.Select(p => p.Pid))}");
        var restarted = await Cli.RunAsync(["restart", "workload", "stubborn"], Env);
        Assert.True(restarted.Code == 0, restarted.ToString());
        Assert.All(tree, p => Assert.False(ProcFs.IsAlive(p), $"pid {p.Pid} of stubborn's tree survived the restart"));

        // flaky crashes and is restarted.
        await Eventually.ValueAsync(() => GetAsync("workload", "flaky"), w => Generation(w) >= 2, Timeout, "flaky restarted");

        // sleepy goes quiet: IDLE from its output, and idle is not a failure (not restarted).
        await sleepyIdle;
        Assert.Equal(1, Generation(await GetAsync("workload", "sleepy")));

        // tmux-agent: IDLE by pattern while it waits for input, then UNHEALTHY (the rate limit) and restarted.
        await tmuxIdle;
        var again = await Eventually.ValueAsync(() => GetAsync("workload", "tmux-agent"), w => Generation(w) >= 2, Timeout, "tmux-agent restarted");
        Assert.StartsWith("unhealthy", Text(again, "status", "lastExit", "reason"));
        Assert.Contains("rate limit", Text(again, "status", "lastExit", "reason"));

        foreach (var name in new[] { "worker", "flaky", "sleepy", "stubborn", "tmux-agent" })
            Assert.Equal(0, (await Cli.RunAsync(["delete", "workload", name], Env)).Code);
    }
}
