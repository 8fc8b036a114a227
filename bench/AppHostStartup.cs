using System.Diagnostics;
using Platform.Testing;

namespace Platform.Bench;

/// <summary>
/// Time from starting the (already built) AppHost to all four services answering SERVING over grpc.health.v1,
/// over several runs, each with a fresh state directory. Target (issue 2): under 5 s on a 2-core machine.
/// </summary>
public static class AppHostStartup
{
    private static readonly TimeSpan Target = TimeSpan.FromSeconds(5);

    public static async Task<int> RunAsync(string[] args)
    {
        var runs = args.Length > 1 && args[0] == "--runs" ? int.Parse(args[1]) : 5;
        var dll = AppHostProcess.ProjectOutput(typeof(AppHostStartup).Assembly, "Platform.AppHost");
        var times = new List<TimeSpan>();

        Console.WriteLine($"AppHost start to all four SERVING ({runs} runs, {Environment.ProcessorCount} cores, {dll})");
        for (var run = 1; run <= runs; run++)
        {
            var state = Directory.CreateTempSubdirectory("platform-bench-").FullName;
            var clock = Stopwatch.StartNew();
            await using (var appHost = AppHostProcess.Start(dll, state))
            {
                await appHost.WaitForAllServingAsync(TimeSpan.FromSeconds(60));
                clock.Stop();
                times.Add(clock.Elapsed);
                var stop = Stopwatch.StartNew();
                var code = await appHost.TerminateAsync(TimeSpan.FromSeconds(30));
                Console.WriteLine($"  run {run}: up in {clock.Elapsed.TotalSeconds:0.000} s; stopped in {stop.Elapsed.TotalSeconds:0.000} s (exit {code})");
            }
            Directory.Delete(state, recursive: true);
        }

        var sorted = times.Order().ToList();
        var median = sorted[sorted.Count / 2];
        Console.WriteLine();
        Console.WriteLine("| metric                              | min     | median  | max     | target  |");
        Console.WriteLine("|-------------------------------------|---------|---------|---------|---------|");
        Console.WriteLine($"| AppHost start -> 4 services SERVING | {sorted[0].TotalSeconds,5:0.00} s | {median.TotalSeconds,5:0.00} s | {sorted[^1].TotalSeconds,5:0.00} s | < {Target.TotalSeconds:0} s   |");
        return median < Target ? 0 : 1;
    }
}
