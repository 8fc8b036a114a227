using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using Google.Protobuf.WellKnownTypes;
using Grpc.Health.V1;
using Grpc.HealthCheck;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Platform.AgentMonitor;
using Platform.AgentMonitor.Probes;
using Platform.Monitor.V1;
using Platform.ProcessControl;
using Platform.ServiceDefaults;
using Platform.Testing;
using State = Platform.Monitor.V1.AgentStatus.Types.State;

namespace Platform.Bench;

/// <summary>
/// The AgentMonitor under the loads of issue 10: the probe engine with its real probes against real panes, processes
/// and gRPC servers (in this process, jitter off, so a "pass" is every target probed once), and the monitor as its
/// own process for memory and idle CPU. Beside each, Tmux-Orchestrator's way: sequential, one process per probe.
/// </summary>
public static class MonitorBench
{
    private static readonly Dictionary<string, string> Env = new() { ["PATH"] = Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin", ["TERM"] = "xterm" };
    private static readonly List<(string Metric, string Theirs, string Ours, string Target, bool Met)> Rows = [];

    public static async Task<int> RunAsync(string[] args)
    {
        Console.WriteLine($"AgentMonitor benchmark: {Environment.ProcessorCount} cores");
        var data = Directory.CreateTempSubdirectory("monitor-bench-").FullName;
        try
        {
            // Optional: the parts to run (tmux, process, grpc, memory); all by default.
            bool Part(string name) => args.Length == 0 || args.Contains(name);
            if (Part("tmux")) await TmuxAsync(data);
            if (Part("process")) await ProcessesAsync();
            if (Part("grpc")) await GrpcHealthAsync();
            if (Part("memory")) await MonitorProcessAsync(data);
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }

        return Table.Print("Tmux-Orchestrator's way", Rows);
    }

    // ---------------------------------------------------------------- tmux

    private static async Task TmuxAsync(string data)
    {
        var socket = Path.Combine(data, "tmux.sock");
        const int Panes = 200;
        // 4 sessions x 50 windows; even windows print twice a second, odd ones wait for a key, then print.
        var panes = new List<(string Target, bool Printing)>();
        for (var s = 0; s < 4; s++)
        {
            for (var w = 0; w < 50; w++)
            {
                var printing = w % 2 == 0;
                var command = printing ? "while :; do echo working; sleep 0.5; done" : "read x; while :; do echo back; sleep 0.2; done";
                if (w == 0) await Run("tmux", "-S", socket, "new-session", "-d", "-s", $"agents{s}", "-x", "120", "-y", "30", command);
                else await Run("tmux", "-S", socket, "new-window", "-d", "-t", $"agents{s}:{w}", command);
                panes.Add(($"agents{s}:{w}.0", printing));
            }
        }
        var server = int.Parse((await Output("tmux", "-S", socket, "display-message", "-p", "#{pid}")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            // Tmux-Orchestrator's way: one `tmux capture-pane` process per pane, one after the other.
            var theirPass = new List<double>();
            var cpuBefore = ChildrenCpu() + Measure.Cpu(server);
            for (var pass = 0; pass < 3; pass++)
            {
                var clock = Stopwatch.StartNew();
                foreach (var (target, _) in panes) await Output("tmux", "-S", socket, "capture-pane", "-p", "-t", target);
                theirPass.Add(clock.Elapsed.TotalMilliseconds);
            }
            var theirCpu = (ChildrenCpu() + Measure.Cpu(server) - cpuBefore).TotalSeconds / 3; // CPU seconds per pass
            var theirShare = theirCpu / Math.Max(1, theirPass.Average() / 1000) * 100;

            await using var engine = await EngineAsync(o => { });
            var states = new ConcurrentDictionary<string, AgentStatus>();
            var completions = new ConcurrentQueue<(long At, double Duration)>();
            var wake = new ConcurrentDictionary<string, TaskCompletionSource>();
            engine.Engine.Probed += s =>
            {
                states[s.TargetId] = s;
                completions.Enqueue((Stopwatch.GetTimestamp(), s.LastProbeDuration.ToTimeSpan().TotalMilliseconds));
                if (s.State == State.Healthy && wake.TryGetValue(s.TargetId, out var tcs)) tcs.TrySetResult();
            };
            foreach (var (target, _) in panes)
                engine.Add(new Target
                {
                    Id = target, Interval = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)), IdleAfter = Duration.FromTimeSpan(TimeSpan.FromSeconds(2)),
                    TmuxPane = new TmuxPaneProbe { Target = target, SocketPath = socket, UnhealthyPatterns = { @"^\S+@\S+:.*\$\s*$" } },
                });
            await Task.Delay(5000); // two idle_afters: quiet panes are idle, JIT settled
            completions.Clear();
            var cpu0 = Measure.Cpu(Environment.ProcessId);
            var tmuxCpu0 = Measure.Cpu(server);
            await Task.Delay(10_000);
            var watchCpu = (Measure.Cpu(Environment.ProcessId) - cpu0).TotalSeconds / 10 * 100;
            var tmuxServerCpu = (Measure.Cpu(server) - tmuxCpu0).TotalSeconds / 10 * 100;
            var passes = Passes([.. completions], Panes);
            var correct = panes.Count(p => states.TryGetValue(p.Target, out var s) && s.State == (p.Printing ? State.Healthy : State.Idle));

            // A quiet pane starts printing: from the key press to the monitor's HEALTHY.
            var latencies = new List<double>();
            foreach (var (target, _) in panes.Where(p => !p.Printing).Take(20))
            {
                var seen = wake[target] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var at = Stopwatch.GetTimestamp();
                await Run("tmux", "-S", socket, "send-keys", "-t", target, "Enter");
                await seen.Task.WaitAsync(TimeSpan.FromSeconds(5));
                latencies.Add(Stopwatch.GetElapsedTime(at).TotalMilliseconds);
            }
            latencies.Sort();

            var cycles = await CyclesAsync(engine, i => new Target
            {
                Id = "cycle-" + panes[i].Target, IdleAfter = Duration.FromTimeSpan(TimeSpan.FromSeconds(2)),
                TmuxPane = new TmuxPaneProbe { Target = panes[i].Target, SocketPath = socket, UnhealthyPatterns = { @"^\S+@\S+:.*\$\s*$" } },
            }, Panes, 5);
            Rows.Add(($"200 tmux panes: one full pass, all due at once (ms, median of {cycles.Count})", $"{theirPass.Average():0} (sequential)", $"{Median(cycles):0.0}", "< 50", Median(cycles) < 50));
            Rows.Add(($"  steady passes at 1/s: spread of one pass (ms, median of {passes.Count})", "-", $"{Median(passes):0.0}", "-", true));
            Rows.Add(("200 tmux panes: classified correctly (100 HEALTHY, 100 IDLE)", "-", $"{correct}/200", "200/200", correct == Panes));
            Rows.Add(("quiet pane starts printing -> HEALTHY (ms, median / max of 20)", "next poll", $"{latencies[latencies.Count / 2]:0.0}/{latencies[^1]:0}", "< 100", latencies[^1] < 100));
            Rows.Add(("watching 200 panes, passes 1/s: monitor CPU (% of a core)", $"{theirShare:0} (incl. tmux)", $"{watchCpu:0.00}", "< 3", watchCpu < 3));
            Rows.Add(("  tmux server CPU meanwhile, panes' own output included (%)", "-", $"{tmuxServerCpu:0.00}", "-", true));
        }
        finally
        {
            await Run("tmux", "-S", socket, "kill-server");
        }
    }

    // ---------------------------------------------------------------- processes

    private static async Task ProcessesAsync()
    {
        // 500 real processes, 20 targets each: a probe costs the same whichever pid it reads.
        var sleepers = Enumerable.Range(0, 500).Select(_ => ChildReaper.Shared.Spawn(new SpawnRequest("sleep", ["600"], Env))).ToList();
        try
        {
            var sample = sleepers.Take(200).ToList();
            var clock = Stopwatch.StartNew();
            foreach (var s in sample) await Output("ps", "-o", "stat=", "-p", s.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
            var theirs = clock.Elapsed.TotalMilliseconds / sample.Count * 10_000;

            await using var engine = await EngineAsync(o => { });
            var cycles = await CyclesAsync(engine, i => new Target { Id = $"p{i:00000}", Process = new ProcessProbe { Pid = sleepers[i % sleepers.Count].Pid } }, 10_000, 5);
            var healthy = engine.Engine.ListStatuses(s => s.State == State.Healthy, "", 20_000).Count;
            Rows.Add(($"10,000 process probes: one full cycle (ms, median of {cycles.Count})", $"{theirs / 1000:0.0} s (est.)", $"{Median(cycles):0}", "< 250", Median(cycles) < 250 && healthy == 10_000));
        }
        finally
        {
            foreach (var s in sleepers) ProcessTree.Signal(s.Identity, ProcessTree.SIGKILL);
            foreach (var s in sleepers) await s.Exited;
        }
    }

    // ---------------------------------------------------------------- grpc_health

    private static async Task GrpcHealthAsync()
    {
        // 10 real gRPC servers (one per port), 100 targets each.
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        var ports = Enumerable.Range(0, 10).Select(_ => ServiceProcess.FreePort()).ToList();
        builder.WebHost.UseKestrel(k =>
        {
            foreach (var port in ports) k.Listen(IPAddress.Loopback, port, o => o.Protocols = HttpProtocols.Http2);
        });
        builder.Services.AddGrpc();
        var health = new HealthServiceImpl();
        health.SetStatus("", HealthCheckResponse.Types.ServingStatus.Serving);
        builder.Services.AddSingleton(health);
        await using var servers = builder.Build();
        servers.MapGrpcService<HealthServiceImpl>();
        await servers.StartAsync();

        // The sequential way: one fresh client (connection) per probe, one after the other.
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < 100; i++)
        {
            using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{ports[i % 10]}");
            await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest());
        }
        var theirs = clock.Elapsed.TotalMilliseconds * 10;

        await using var engine = await EngineAsync(o => { });
        var cycles = await CyclesAsync(engine, i => new Target { Id = $"g{i:0000}", GrpcHealth = new GrpcHealthProbe { Address = $"127.0.0.1:{ports[i % 10]}" } }, 1000, 5);
        var healthy = engine.Engine.ListStatuses(s => s.State == State.Healthy, "", 2000).Count;
        Rows.Add(($"1,000 grpc_health probes, 10 servers: one full cycle (ms, median of {cycles.Count})", $"{theirs:0} (est.)", $"{Median(cycles):0}", "< 1000", Median(cycles) < 1000 && healthy == 1000));
        await servers.StopAsync();
    }

    // ---------------------------------------------------------------- the monitor as its own process

    private static async Task MonitorProcessAsync(string data)
    {
        var dll = AppHostProcess.ProjectOutput(typeof(MonitorBench).Assembly, "Platform.AgentMonitor");
        await using var monitor = await ServiceProcess.StartAsync(dll, data, new Dictionary<string, string>
        {
            ["Monitor__DiscoverFromRegistry"] = "false",
            ["Logging__LogLevel__Default"] = "Warning",
        });
        using var channel = GrpcChannel.ForAddress(monitor.GrpcUrl);
        var client = new Monitor.V1.AgentMonitor.AgentMonitorClient(channel);
        var sleepers = Enumerable.Range(0, 100).Select(_ => ChildReaper.Shared.Spawn(new SpawnRequest("sleep", ["600"], Env))).ToList();
        try
        {
            // 10,000 targets, interval 60 s: after the first probes (within a second of each add) nothing is due for ~54 s.
            var next = -1;
            await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < 10_000)
                    await client.AddTargetAsync(new AddTargetRequest { Target = new Target { Id = $"p{i:00000}", Interval = Duration.FromTimeSpan(TimeSpan.FromSeconds(60)), Process = new ProcessProbe { Pid = sleepers[i % 100].Pid } } });
            })));
            await Task.Delay(8000);
            var cpu0 = Measure.Cpu(monitor.Pid);
            await Task.Delay(10_000);
            var idle = (Measure.Cpu(monitor.Pid) - cpu0).TotalSeconds / 10 * 100;
            var rss = Measure.Rss(monitor.Pid);
            var healthy = (await client.ListStatusesAsync(new ListStatusesRequest { State = State.Healthy, PageSize = 1000 })).Statuses.Count;
            Rows.Add(("monitor process, 10,000 targets: RSS (MiB)", "-", $"{rss:0}", "< 150", rss < 150));
            Rows.Add(("  CPU at idle between cycles (% of a core)", "-", $"{idle:0.00}", "< 2", idle < 2 && healthy == 1000));
        }
        finally
        {
            foreach (var s in sleepers) ProcessTree.Signal(s.Identity, ProcessTree.SIGKILL);
            foreach (var s in sleepers) await s.Exited;
        }
    }

    // ---------------------------------------------------------------- helpers

    internal sealed class InProcessEngine(ServiceProvider services) : IAsyncDisposable
    {
        public MonitorEngine Engine { get; } = services.GetRequiredService<MonitorEngine>();

        public void Add(Target target)
        {
            var v = new Violations();
            Engine.Upsert(TargetValidation.Validate(target, services.GetRequiredService<IOptions<MonitorOptions>>().Value, v) ?? throw new InvalidOperationException(v.ToString()));
        }

        public async ValueTask DisposeAsync()
        {
            await Engine.StopAsync(CancellationToken.None);
            await services.DisposeAsync();
        }
    }

    /// <summary>The real engine and probes, jitter off: a target's first probe is due at once.</summary>
    internal static async Task<InProcessEngine> EngineAsync(Action<MonitorOptions> configure)
    {
        var services = new ServiceCollection()
            .AddLogging(l => l.SetMinimumLevel(LogLevel.Warning).AddConsole())
            .AddSingleton(TimeProvider.System)
            .Configure<MonitorOptions>(o =>
            {
                o.Jitter = 0;
                configure(o);
            })
            .AddSingleton<ProbeClients>()
            .AddSingleton<TmuxServers>()
            .AddSingleton<ProbeFactory>()
            .AddSingleton<MonitorEngine>()
            .BuildServiceProvider();
        var engine = new InProcessEngine(services);
        await engine.Engine.StartAsync(CancellationToken.None);
        return engine;
    }

    /// <summary>
    /// Full cycles: all <paramref name="count"/> targets due at once (removed and added again, long interval), timed
    /// from the first add to the last probe's end. Two warm-up cycles first.
    /// </summary>
    internal static async Task<List<double>> CyclesAsync(InProcessEngine engine, Func<int, Target> make, int count, int cycles)
    {
        var results = new List<double>();
        var done = 0;
        TaskCompletionSource all = new(TaskCreationOptions.RunContinuationsAsynchronously);
        var targets = Enumerable.Range(0, count).Select(make).ToList();
        var ids = targets.Select(t => t.Id).ToHashSet(); // other targets of the engine do not count
        void OnProbed(AgentStatus s)
        {
            if (ids.Contains(s.TargetId) && Interlocked.Increment(ref done) == count) all.TrySetResult();
        }
        engine.Engine.Probed += OnProbed;
        foreach (var t in targets) t.Interval = Duration.FromTimeSpan(TimeSpan.FromHours(1));
        for (var cycle = 0; cycle < cycles + 2; cycle++)
        {
            foreach (var t in targets) engine.Engine.Remove(t.Id);
            await Task.Delay(200);
            done = 0;
            all = new(TaskCreationOptions.RunContinuationsAsynchronously);
            var clock = Stopwatch.StartNew();
            foreach (var t in targets) engine.Add(t);
            await all.Task.WaitAsync(TimeSpan.FromSeconds(60));
            if (cycle >= 2) results.Add(clock.Elapsed.TotalMilliseconds);
        }
        engine.Engine.Probed -= OnProbed;
        return results;
    }

    /// <summary>Splits probe completions into passes of <paramref name="size"/> (each target once, as every interval
    /// exceeds a pass) and returns each pass's span: first probe's start to last probe's end.</summary>
    private static List<double> Passes(List<(long At, double Duration)> completions, int size)
    {
        var passes = new List<double>();
        for (var i = 0; i + size <= completions.Count; i += size)
            passes.Add(Stopwatch.GetElapsedTime(completions[i].At, completions[i + size - 1].At).TotalMilliseconds + completions[i].Duration);
        return passes;
    }

    private static double Median(List<double> values) => values.Count == 0 ? double.NaN : values.Order().ElementAt(values.Count / 2);

    internal static async Task Run(string executable, params string[] args)
    {
        var process = ChildReaper.Shared.Spawn(new SpawnRequest(executable, args, Env));
        var status = await process.Exited;
        if (status.Code != 0) throw new InvalidOperationException($"{executable} {string.Join(' ', args)}: {status}");
    }

    internal static async Task<string> Output(string executable, params string[] args)
    {
        var process = ChildReaper.Shared.Spawn(new SpawnRequest(executable, args, Env, Stdout: StdioTarget.Pipe));
        using var reader = new StreamReader(process.StandardOutput!);
        var text = await reader.ReadToEndAsync();
        await process.Exited;
        return text;
    }


    /// <summary>CPU of this process's reaped children (cutime + cstime of /proc/self/stat).</summary>
    private static TimeSpan ChildrenCpu()
    {
        var text = File.ReadAllText("/proc/self/stat");
        var f = text[(text.LastIndexOf(')') + 2)..].Split(' ');
        return TimeSpan.FromSeconds((ulong.Parse(f[13], System.Globalization.CultureInfo.InvariantCulture) + ulong.Parse(f[14], System.Globalization.CultureInfo.InvariantCulture)) / (double)ProcFs.TicksPerSecond);
    }
}
