using System.Diagnostics;
using System.Globalization;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Bench;

/// <summary>
/// The AppHost (built) to its four services ready, side by side in one run: (1) a bare Aspire AppHost with four empty
/// web services in our topology (the same references and waits) and launch mode (build output, not `dotnet run`),
/// generated and built here; (2) ours; then, when eng/publish-native.sh has published ours, both again with Native AOT
/// builds (ours with --native, the bare one's services published here). All on the fixed ports of their settings; ready is probed on the services
/// themselves every 20 ms: ours answer SERVING over grpc.health.v1, the empty ones 200 on /health. One uncounted
/// warm-up run of each first; each run starts once the whole tree of the one before has exited (DCP outlives the AppHost by a few seconds). Memory: RSS of the whole tree at that moment (AppHost, DCP and its helpers, dashboard, services).
/// Targets (issue 16): ours within 1.15x of the baseline's median time and within 1.5x of its memory.
/// </summary>
public static class AppHostStartup
{
    public static async Task<int> RunAsync(string[] args)
    {
        var runs = args.Length > 1 && args[0] == "--runs" ? int.Parse(args[1], CultureInfo.InvariantCulture) : 5;
        var ours = AppHostProcess.ProjectOutput(typeof(AppHostStartup).Assembly, "Platform.AppHost");
        var configuration = ours.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        Console.WriteLine($"AppHost start to four services ready, {runs} runs each, {Environment.ProcessorCount} cores, {configuration}");
        var baseline = await BareAppHost.BuildAsync(configuration);

        // Both with the ports of their own settings (no randomising), so that readiness is probed on the services
        // themselves, the same way for both, and not through what the AppHost reports.
        var fixedPorts = new Dictionary<string, string> { ["DcpPublisher__RandomizePorts"] = "false" };
        var bareProbes = BareAppHost.Names.Select((name, i) => new ReadyProbe(name, "Svc" + i, HttpReady($"http://127.0.0.1:{BareAppHost.HttpPort(i)}/health"))).ToArray();
        var ourProbes = Services.Select(s => new ReadyProbe(s.Name, s.Project, GrpcServing(GrpcUrl(s.Project)))).ToArray();

        // The same again with Native AOT builds on both sides: ours with --native (eng/publish-native.sh's builds), the
        // bare one's empty services published AOT here. Left out when ours are not published.
        var native = Services.All(s => AppHostProcess.NativeBuild(typeof(AppHostStartup).Assembly, s.Project) is not null);
        if (native) await BareAppHost.PublishNativeAsync();
        else Console.WriteLine("no Native AOT builds under artifacts/publish (eng/publish-native.sh): the --native rows are left out");
        var modes = new List<(string Label, string Host, ReadyProbe[] Probes, Dictionary<string, string> Environment)>
        {
            ("bare", baseline, bareProbes, fixedPorts),
            ("ours", ours, ourProbes, fixedPorts),
        };
        if (native)
        {
            modes.Add(("bare native", baseline, bareProbes, new(fixedPorts) { ["BARE_NATIVE"] = "true" }));
            modes.Add(("ours native", ours, ourProbes, new(fixedPorts) { ["Platform__Native"] = "true" }));
        }

        // One run of each first, not counted: the first start after a build reads everything from disk.
        foreach (var mode in modes) await MeasureAsync($"{mode.Label} warm-up", mode.Host, mode.Probes, mode.Environment);
        var results = modes.Select(_ => new List<(TimeSpan Up, double Rss)>()).ToList();
        for (var run = 1; run <= runs; run++)
        {
            // Alternated, so that a slower phase of the machine hits all.
            for (var m = 0; m < modes.Count; m++)
                results[m].Add(await MeasureAsync($"{modes[m].Label} {run}", modes[m].Host, modes[m].Probes, modes[m].Environment));
        }

        Console.WriteLine();
        Console.WriteLine("| figure                                                      | bare Aspire AppHost      | ours                     | ratio | target  | met |");
        Console.WriteLine("|-------------------------------------------------------------|--------------------------|--------------------------|-------|---------|-----|");
        var met = true;
        for (var m = 0; m + 1 < modes.Count; m += 2)
        {
            var (bare, mine) = (results[m], results[m + 1]);
            var builds = m == 0 ? "JIT builds" : "Native AOT (--native)";
            var (bareUp, bareRss) = (Median(bare.Select(b => b.Up.TotalSeconds)), Median(bare.Select(b => b.Rss)));
            var (oursUp, oursRss) = (Median(mine.Select(b => b.Up.TotalSeconds)), Median(mine.Select(b => b.Rss)));
            Console.WriteLine($"| {$"start -> 4 ready, min/median/max (s), {builds}",-59} | {Spread(bare.Select(b => b.Up.TotalSeconds)),-24} | {Spread(mine.Select(b => b.Up.TotalSeconds)),-24} | {oursUp / bareUp,5:0.00} | <= 1.15 | {(oursUp / bareUp <= 1.15 ? "yes" : "NO"),-3} |");
            Console.WriteLine($"| {$"RSS of the whole tree, median (MiB), {builds}",-59} | {bareRss,-24:0} | {oursRss,-24:0} | {oursRss / bareRss,5:0.00} | <= 1.5  | {(oursRss / bareRss <= 1.5 ? "yes" : "NO"),-3} |");
            met &= oursUp / bareUp <= 1.15 && oursRss / bareRss <= 1.5;
        }
        Console.WriteLine("| history: the home-made engine (issue 2)                     | -                        | 3.3-3.9 s, 408 MiB       |       |         |     |");
        Console.WriteLine();
        Console.WriteLine("The home-made engine started four services and nothing else (no DCP, no dashboard, no per-resource helpers).");
        return met ? 0 : 1;
    }

    private static readonly (string Name, string Project)[] Services =
    [
        ("registry", "Platform.SessionRegistry"), ("launcher", "Platform.Launcher"),
        ("monitor", "Platform.AgentMonitor"), ("supervisor", "Platform.Supervisor"),
    ];

    /// <summary>A service's readiness check (true once it answers ready), and the name of its executable.</summary>
    private sealed record ReadyProbe(string Name, string Executable, Func<Task<bool>> IsReady);

    private static async Task<(TimeSpan, double)> MeasureAsync(string label, string dll, ReadyProbe[] probes, Dictionary<string, string> environment)
    {
        var state = Directory.CreateTempSubdirectory("platform-bench-").FullName;
        try
        {
            var clock = Stopwatch.StartNew();
            await using var host = AppHostProcess.Start(dll, state, environment);
            var readyAt = await WaitForAllAsync(host, probes, clock, TimeSpan.FromSeconds(90));
            clock.Stop();
            var tree = Tree(host.Pid);
            var rss = ProcFs.Usage(tree.Select(p => p.Stat)).RssBytes / 1024.0 / 1024.0;
            var launchedAt = LaunchedAt(host.Pid, tree, probes);
            var cpu = CpuByProgram(tree);
            var stop = Stopwatch.StartNew();
            var everything = tree.Select(p => new ProcessIdentity(p.Stat.Pid, p.Stat.StartTime)).ToList();
            var code = await host.TerminateAsync(TimeSpan.FromSeconds(60));
            var stopped = stop.Elapsed;
            // DCP goes on for a few seconds after the AppHost exits, stopping what it ran: the next run starts once the
            // whole tree is gone, so that it never shares the cores with the cleanup of the one before.
            while (everything.Any(ProcFs.IsAlive) && stop.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(100);
            var left = everything.Where(ProcFs.IsAlive).Select(p => p.Pid).ToList();
            var timeline = string.Join(", ", probes.Select((p, i) => $"{p.Name} {launchedAt[i]:0.00}->{readyAt[i].TotalSeconds:0.00}"));
            Console.WriteLine($"  {label}: ready in {clock.Elapsed.TotalSeconds:0.000} s ({timeline}), {rss:0} MiB in the tree; stopped in {stopped.TotalSeconds:0.0} s (exit {code}), "
                + (left.Count == 0 ? $"the whole tree gone in {stop.Elapsed.TotalSeconds:0.0} s" : $"{left.Count} of its processes still running after 60 s: {string.Join(", ", left)}"));
            Console.WriteLine($"    CPU s by program until then: {cpu}");
            return (clock.Elapsed, rss);
        }
        finally
        {
            try { Directory.Delete(state, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Polls each probe every 20 ms, each in a loop of its own (a call that hangs on one service, say on a port whose
    /// listener is up before the service answers, delays nobody else's reading); when each first answered ready.
    /// </summary>
    private static async Task<TimeSpan[]> WaitForAllAsync(AppHostProcess host, ReadyProbe[] probes, Stopwatch clock, TimeSpan timeout)
    {
        using var stop = new CancellationTokenSource();
        var watchdog = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                if (clock.Elapsed > timeout) throw new TimeoutException($"not every service answered ready in {timeout}:\n{host.Output}");
                if (host.HasExited) throw new InvalidOperationException("the AppHost exited:\n" + host.Output);
                await Task.Delay(100);
            }
        });
        var readings = Task.WhenAll(probes.Select(async probe =>
        {
            while (!await probe.IsReady())
            {
                if (watchdog.IsCompleted) await watchdog; // rethrows why we gave up
                await Task.Delay(20);
            }
            return clock.Elapsed;
        }));
        var first = await Task.WhenAny(readings, watchdog);
        stop.Cancel();
        if (first == watchdog) await watchdog;
        return await readings;
    }

    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(2) };

    private static Func<Task<bool>> HttpReady(string url) => async () =>
    {
        try { return (await Http.GetAsync(url)).IsSuccessStatusCode; }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { return false; }
    };

    private static Func<Task<bool>> GrpcServing(string url) => async () =>
        await AppHostProcess.CheckHealthAsync(url) == Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving;

    /// <summary>A service's gRPC endpoint from the appsettings.json in its build output (Kestrel:Endpoints:grpc:Url).</summary>
    private static string GrpcUrl(string project)
    {
        var settings = Path.Combine(Path.GetDirectoryName(AppHostProcess.ProjectOutput(typeof(AppHostStartup).Assembly, project))!, "appsettings.json");
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(settings));
        return json.RootElement.GetProperty("Kestrel").GetProperty("Endpoints").GetProperty("grpc").GetProperty("Url").GetString()!;
    }

    /// <summary>
    /// The AppHost's process tree plus DCP's (which it detaches), with everything DCP started, read once: each process
    /// with its program (the executable's file name, or "dotnet X.dll" for the dotnet host).
    /// </summary>
    private static List<(ProcStat Stat, string Program)> Tree(int appHostPid)
    {
        var all = ProcFs.All();
        return AppHostProcess.DcpProcesses(appHostPid).Append(appHostPid)
            .SelectMany(r => ProcFs.Tree(r, all)).DistinctBy(p => p.Pid)
            .Select(p => (p, Program(p.Pid))).ToList();
    }

    private static string Program(int pid)
    {
        string[] args;
        try { args = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0'); }
        catch (IOException) { return ""; }
        var name = Path.GetFileName(args[0]);
        return name == "dotnet" && args.Length > 1 ? "dotnet " + Path.GetFileName(args[1]) : name;
    }

    /// <summary>
    /// When each service's process was started, in seconds after the AppHost's (from /proc, 10 ms ticks), so that a
    /// slow start can be told apart into "launched late" (the waits) and "slow to answer" (the service).
    /// </summary>
    private static double?[] LaunchedAt(int appHostPid, List<(ProcStat Stat, string Program)> tree, ReadyProbe[] probes)
    {
        if (tree.FirstOrDefault(p => p.Stat.Pid == appHostPid).Stat is not { Pid: > 0 } host) return new double?[probes.Length];
        return probes.Select(probe =>
        {
            var process = tree.FirstOrDefault(p => p.Program == probe.Executable).Stat;
            return process.Pid == 0 ? (double?)null : (process.StartTime - host.StartTime) / (double)ProcFs.TicksPerSecond;
        }).ToArray();
    }

    /// <summary>CPU seconds each program of the tree had used, largest first (where start-up time goes on two cores).</summary>
    private static string CpuByProgram(List<(ProcStat Stat, string Program)> tree) =>
        string.Join(", ", tree
            .GroupBy(p => p.Program)
            .Select(g => (g.Key, Seconds: g.Sum(p => (double)(p.Stat.UserTicks + p.Stat.SystemTicks)) / ProcFs.TicksPerSecond))
            .OrderByDescending(g => g.Seconds)
            .Select(g => $"{g.Key} {g.Seconds:0.00}"));

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }

    private static string Spread(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return $"{sorted[0]:0.00} / {sorted[sorted.Count / 2]:0.00} / {sorted[^1]:0.00}";
    }
}
