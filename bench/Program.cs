using Platform.Bench;

var scenarios = new Dictionary<string, Func<string[], Task<int>>>
{
    ["apphost-startup"] = AppHostStartup.RunAsync,
    ["registry"] = RegistryBench.RunAsync,
    ["launcher"] = LauncherBench.RunAsync,
    ["monitor"] = MonitorBench.RunAsync,
    ["supervisor"] = SupervisorBench.RunAsync,
    ["nodes"] = NodesBench.RunAsync,
    ["images"] = ImagesBench.RunAsync,
    ["reliability"] = ReliabilityBench.RunAsync,
    ["peers"] = PeersBench.RunAsync,
    // platformctl beside supervisorctl and pm2: peers' scenario 8 alone (options as peers').
    ["cli"] = a => PeersBench.RunAsync(["--scenarios", "8", "--tools", "supervisord,PM2,platform", .. a]),
};

if (args.Length == 0 || !scenarios.TryGetValue(args[0], out var scenario))
{
    Console.Error.WriteLine($"usage: dotnet run -c Release --project bench -- <scenario> [options]\nscenarios: {string.Join(", ", scenarios.Keys)}");
    return 2;
}

return await scenario(args[1..]);
