using System.Globalization;
using Platform.ProcessControl;

namespace Platform.Bench;

/// <summary>What the benchmarks read of a process from /proc.</summary>
internal static class Measure
{
    /// <summary>Resident set size in MiB (VmRSS).</summary>
    public static double Rss(int pid) => Testing.Chaos.ProcessFigures.Rss(pid);

    /// <summary>CPU time used so far (user + system).</summary>
    public static TimeSpan Cpu(int pid) =>
        ProcFs.ReadStat(pid) is { } s ? TimeSpan.FromSeconds((s.UserTicks + s.SystemTicks) / (double)ProcFs.TicksPerSecond) : TimeSpan.Zero;
}

/// <summary>The benches' command-line options: `--name value`.</summary>
internal static class BenchOptions
{
    public static string? Text(string[] args, string name) =>
        Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;

    public static int Int(string[] args, string name, int fallback) =>
        Text(args, name) is { } value ? int.Parse(value, CultureInfo.InvariantCulture) : fallback;
}
