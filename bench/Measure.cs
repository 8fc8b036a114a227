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
