using System.Diagnostics;
using System.Globalization;
using Google.Protobuf.WellKnownTypes;
using Platform.Monitor.V1;

namespace Platform.Bench;

/// <summary>
/// Scenario (7) of <c>bench peers</c>: one monitoring cycle over 50, 500 and 5,000 agents, each a tmux pane (one
/// tmux server, a window per agent), beside Tmux-Orchestrator's sequential way: one <c>tmux capture-pane</c> process
/// per pane, one after the other. Ours is the AgentMonitor's probe engine with its real tmux probe (one control-mode
/// connection per tmux server, captures in flight at once), all targets due at once, timed from the first target
/// added to the last probe's end (median of 3 after 2 warm-ups). supervisord and PM2 have no such probe.
/// A capture-pane process costs more the more windows the server has (about 70 ms each at 5,000 here), so at sizes
/// above <see cref="SequentialSample"/> the sequential cycle is timed over that many panes and scaled to all of them.
/// </summary>
internal static class PeersMonitoring
{
    public const string Tool = "Tmux-Orchestrator";
    private const int SequentialSample = 200;

    /// <param name="add">(row, tool, value, shown): one figure of the peers' table.</param>
    public static async Task RunAsync(string root, IReadOnlyList<int> sizes, Action<string, string, double, string> add)
    {
        var ptys = File.ReadAllText(PtyMax).Trim();
        try
        {
            foreach (var n in sizes) await CycleAsync(root, n, add);
        }
        finally
        {
            if (File.ReadAllText(PtyMax).Trim() != ptys) File.WriteAllText(PtyMax, ptys); // as it was
        }
    }

    private static async Task CycleAsync(string root, int n, Action<string, string, double, string> add)
    {
        if (!EnoughPtys(n))
        {
            Console.WriteLine($"  skipped {n} agents: the kernel allows fewer pseudo-terminals (kernel.pty.max) and this process may not raise it");
            return;
        }
        var socket = Path.Combine(root, $"tmux-{n}.sock");
        var row = $"one monitoring cycle over {n:N0} agents in tmux panes";
        try
        {
            var clock = Stopwatch.StartNew();
            var targets = await CreatePanesAsync(socket, n);
            Console.WriteLine($"  {n:N0} panes created in {clock.Elapsed.TotalSeconds:0.0} s");

            var sample = Math.Min(n, SequentialSample);
            clock.Restart();
            foreach (var target in targets.Take(sample)) await TmuxAsync(socket, check: false, "capture-pane", "-p", "-t", target);
            var sequential = clock.Elapsed.TotalMilliseconds * n / sample;
            add(row, Tool, sequential, sample == n ? $"{sequential:N0} ms" : $"{sequential:N0} ms ({sample} timed)");

            await using var engine = await MonitorBench.EngineAsync(_ => { });
            var cycles = await MonitorBench.CyclesAsync(engine, i => new Target
            {
                Id = $"agent-{n}-{i}",
                IdleAfter = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
                TmuxPane = new TmuxPaneProbe { Target = targets[i], SocketPath = socket },
            }, n, 3);
            var median = cycles.Order().ElementAt(cycles.Count / 2);
            add(row, "platform", median, $"{median:N1} ms");
        }
        finally
        {
            await TmuxAsync(socket, check: false, "kill-server");
        }
    }

    /// <summary>One tmux server with a window per agent (a line of output, then a sleeping program), created 50
    /// windows per tmux command; the server ignores any tmux.conf. The agents' targets, in order.</summary>
    private static async Task<List<string>> CreatePanesAsync(string socket, int n)
    {
        await TmuxAsync(socket, check: true, "new-session", "-d", "-s", "agents", "-x", "120", "-y", "30", "sleep 100000");
        var targets = new List<string>(n);
        for (var first = 1; first <= n; first += 50)
        {
            var args = new List<string>();
            for (var w = first; w < Math.Min(n + 1, first + 50); w++)
            {
                if (args.Count > 0) args.Add(";");
                args.AddRange(["new-window", "-d", "-t", $"agents:{w}", $"echo agent {w} at work; exec sleep 100000"]);
                targets.Add($"agents:{w}.0");
            }
            await TmuxAsync(socket, true, [.. args]);
        }
        return targets;
    }

    /// <summary>A tmux command on the bench's server, ignoring any tmux.conf (MonitorBench's runners: to its end; a
    /// failure throws unless <paramref name="check"/> is off).</summary>
    private static Task TmuxAsync(string socket, bool check, params string[] args) =>
        check ? MonitorBench.Run("tmux", ["-f", "/dev/null", "-S", socket, .. args]) : MonitorBench.Output("tmux", ["-f", "/dev/null", "-S", socket, .. args]);

    private const string PtyMax = "/proc/sys/kernel/pty/max";

    /// <summary>Each pane needs a pseudo-terminal; Debian's default of 4,096 is raised (for the run) when this process may.</summary>
    private static bool EnoughPtys(int panes)
    {
        const string max = PtyMax;
        var need = panes + 512;
        try
        {
            if (int.Parse(File.ReadAllText(max).Trim(), CultureInfo.InvariantCulture) >= need) return true;
            File.WriteAllText(max, need.ToString(CultureInfo.InvariantCulture));
            Console.WriteLine($"  raised {max} to {need} for {panes:N0} panes");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
