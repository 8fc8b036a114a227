using Platform.Testing;
using Platform.Testing.Chaos;
using Platform.Testing.HostileInput;

namespace Platform.Bench;

/// <summary>
/// `bench reliability`: the hostile-input property against the real AppHost's four services, with and without the
/// token; then the chaos run (each service SIGKILLed <c>--rounds</c> times under load) and a soak of <c>--soak</c>
/// seconds on a second AppHost run. Prints faults per service, what was checked, lost, duplicated and orphaned; fuzz
/// cases per service and how many got a proper status; RSS, descriptors and threads at the soak's start and end.
/// Exit code 0 when nothing was lost, doubled, left behind or answered improperly.
/// </summary>
public static class ReliabilityBench
{
    public static async Task<int> RunAsync(string[] args)
    {
        int Option(string name, int fallback) => BenchOptions.Int(args, name, fallback);
        var rounds = Option("--rounds", 3);
        var soak = Option("--soak", 300);
        var cases = Option("--fuzz", 150);
        var dll = AppHostProcess.ProjectOutput(typeof(ReliabilityBench).Assembly, "Platform.AppHost");
        var quiet = new Dictionary<string, string> { ["Logging__LogLevel__Default"] = "Warning" };
        Console.WriteLine($"Reliability: {Environment.ProcessorCount} cores; fuzz {cases} cases per RPC ({cases / 6} per stream), {rounds} rounds of SIGKILLs, soak {soak} s");

        // 1. Hostile input, on an AppHost of its own (what an authenticated fuzz creates must not load the chaos run).
        var fuzz = new List<FuzzResult>();
        var fuzzState = Directory.CreateTempSubdirectory("platform-fuzz-").FullName;
        try
        {
            await using var host = AppHostProcess.Start(dll, fuzzState, quiet);
            var state = await host.WaitForAllServingAsync(TimeSpan.FromSeconds(120));
            fuzz.AddRange(await FuzzRun.RunAsync(state, authenticated: false, cases, cases / 6));
            fuzz.AddRange(await FuzzRun.RunAsync(state, authenticated: true, cases, cases / 6));
            await host.TerminateAsync(TimeSpan.FromSeconds(60));
        }
        finally
        {
            Directory.Delete(fuzzState, recursive: true);
        }

        // 2. Chaos and soak.
        ChaosReport report;
        var chaosState = Directory.CreateTempSubdirectory("platform-chaos-").FullName;
        try
        {
            await using var host = AppHostProcess.Start(dll, chaosState, quiet);
            report = await new ChaosRun(host, new ChaosOptions { Rounds = rounds, Soak = TimeSpan.FromSeconds(soak) }, Console.WriteLine).RunAsync();
        }
        finally
        {
            try { Directory.Delete(chaosState, recursive: true); } catch (IOException) { }
        }

        Console.WriteLine();
        foreach (var line in ChaosTable.Lines(report)) Console.WriteLine(line);
        Console.WriteLine();
        var rows = new List<string[]> { new[] { "fuzz", "token", "cases", "proper status", "OK", "serving after" } };
        foreach (var f in fuzz)
            rows.Add([f.Service, f.Authenticated ? "yes" : "no", $"{f.Cases}", $"{f.Proper}", $"{f.Ok}", f.ServingAfter ? "yes" : "NO"]);
        foreach (var line in ChaosTable.Render(rows)) Console.WriteLine(line);
        foreach (var f in fuzz)
            foreach (var improper in f.Improper.Take(10)) Console.WriteLine("IMPROPER: " + improper);

        var fuzzOk = fuzz.All(f => f.Improper.Count == 0 && f.ServingAfter && (f.Authenticated || f.Ok == 0));
        return report.Failures.Any() || !fuzzOk ? 1 : 0;
    }
}
