using System.Globalization;
using Platform.ProcessControl;

namespace Platform.Bench;

/// <summary>What the benchmarks read of a process from /proc.</summary>
internal static class Measure
{
    /// <summary>Resident set size in MiB (VmRSS).</summary>
    public static double Rss(int pid) =>
        long.Parse(File.ReadAllLines($"/proc/{pid}/status").Single(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;

    /// <summary>CPU time used so far (user + system).</summary>
    public static TimeSpan Cpu(int pid) =>
        ProcFs.ReadStat(pid) is { } s ? TimeSpan.FromSeconds((s.UserTicks + s.SystemTicks) / (double)ProcFs.TicksPerSecond) : TimeSpan.Zero;
}
