using System.Diagnostics;
using System.Globalization;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Bench;

/// <summary>
/// The AppHost (built) to its four services ready, side by side in one run: (1) a bare Aspire AppHost with four empty
/// web services in our topology (the same references and waits) and launch mode (build output, not `dotnet run`),
/// generated and built here; (2) ours. Ready: ours answer SERVING over grpc.health.v1; the empty ones answer 200 on
/// /health. Memory: RSS of the whole tree at that moment (AppHost, DCP and its helpers, dashboard, services).
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

        var bare = new List<(TimeSpan Up, double Rss)>();
        var mine = new List<(TimeSpan Up, double Rss)>();
        for (var run = 1; run <= runs; run++)
        {
            // Alternated, so that a slower phase of the machine hits both.
            bare.Add(await MeasureAsync($"bare {run}", baseline, ready: BareReadyAsync, environment: new() { ["DcpPublisher__RandomizePorts"] = "false" }));
            mine.Add(await MeasureAsync($"ours {run}", ours, ready: async host => { await host.WaitForAllServingAsync(TimeSpan.FromSeconds(90)); return true; }));
        }

        var (bareUp, bareRss) = (Median(bare.Select(b => b.Up.TotalSeconds)), Median(bare.Select(b => b.Rss)));
        var (oursUp, oursRss) = (Median(mine.Select(b => b.Up.TotalSeconds)), Median(mine.Select(b => b.Rss)));
        Console.WriteLine();
        Console.WriteLine("| figure                                   | bare Aspire AppHost      | ours                     | ratio | target  | met |");
        Console.WriteLine("|------------------------------------------|--------------------------|--------------------------|-------|---------|-----|");
        Console.WriteLine($"| start -> 4 ready, min / median / max (s) | {Spread(bare.Select(b => b.Up.TotalSeconds)),-24} | {Spread(mine.Select(b => b.Up.TotalSeconds)),-24} | {oursUp / bareUp,5:0.00} | <= 1.15 | {(oursUp / bareUp <= 1.15 ? "yes" : "NO"),-3} |");
        Console.WriteLine($"| RSS of the whole tree, median (MiB)      | {bareRss,-24:0} | {oursRss,-24:0} | {oursRss / bareRss,5:0.00} | <= 1.5  | {(oursRss / bareRss <= 1.5 ? "yes" : "NO"),-3} |");
        Console.WriteLine("| history: the home-made engine (issue 2)  | -                        | 3.3-3.9 s, 408 MiB       |       |         |     |");
        Console.WriteLine();
        Console.WriteLine("The home-made engine started four services and nothing else (no DCP, no dashboard, no per-resource helpers).");
        return oursUp / bareUp <= 1.15 && oursRss / bareRss <= 1.5 ? 0 : 1;
    }

    private static async Task<(TimeSpan, double)> MeasureAsync(string label, string dll, Func<AppHostProcess, Task<bool>> ready, Dictionary<string, string>? environment = null)
    {
        var state = Directory.CreateTempSubdirectory("platform-bench-").FullName;
        try
        {
            var clock = Stopwatch.StartNew();
            await using var host = AppHostProcess.Start(dll, state, environment);
            await ready(host);
            clock.Stop();
            var rss = TreeRssMiB(host.Pid);
            var stop = Stopwatch.StartNew();
            var code = await host.TerminateAsync(TimeSpan.FromSeconds(60));
            Console.WriteLine($"  {label}: ready in {clock.Elapsed.TotalSeconds:0.000} s, {rss:0} MiB in the tree; stopped in {stop.Elapsed.TotalSeconds:0.0} s (exit {code})");
            await Task.Delay(TimeSpan.FromSeconds(3)); // DCP finishes its cleanup after the AppHost exits
            return (clock.Elapsed, rss);
        }
        finally
        {
            try { Directory.Delete(state, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>The AppHost's process tree plus DCP's (which it detaches), with everything DCP started.</summary>
    private static double TreeRssMiB(int appHostPid)
    {
        var all = ProcFs.All();
        var roots = AppHostProcess.DcpProcesses(appHostPid).Append(appHostPid);
        var tree = roots.SelectMany(r => ProcFs.Tree(r, all)).DistinctBy(p => p.Pid).ToList();
        return ProcFs.Usage(tree).RssBytes / 1024.0 / 1024.0;
    }

    private static async Task<bool> BareReadyAsync(AppHostProcess host)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (DateTime.UtcNow < deadline)
        {
            var up = 0;
            for (var i = 0; i < BareAppHost.Names.Length; i++)
            {
                try
                {
                    if ((await http.GetAsync($"http://127.0.0.1:{BareAppHost.HttpPort(i)}/health")).IsSuccessStatusCode) up++;
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                }
            }
            if (up == BareAppHost.Names.Length) return true;
            await Task.Delay(20);
        }
        throw new TimeoutException("the bare AppHost's services did not all answer /health:\n" + host.Output);
    }

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
