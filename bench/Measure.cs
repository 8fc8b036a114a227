using System.Globalization;
using Platform.ProcessControl;

namespace Platform.Bench;

/// <summary>What the benchmarks read of a process from /proc.</summary>
internal static class Measure
{
    /// <summary>Resident set size in MiB (VmRSS).</summary>
    public static double Rss(int pid) => Testing.Chaos.ProcessFigures.Rss(pid);

    /// <summary>
    /// CPU time the process's live threads have run, to the nanosecond (the first field of each
    /// /proc/PID/task/TID/schedstat, the scheduler's own account). utime and stime are sampled at the timer tick, so a
    /// program whose timers wake it on the tick for a few microseconds can be charged whole ticks, which at rest
    /// overstates it several times over. Thread ids to nanoseconds; a thread that exits takes its time with it.
    /// </summary>
    public static Dictionary<int, long> ThreadCpu(int pid)
    {
        var threads = new Dictionary<int, long>();
        try
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                try
                {
                    var text = File.ReadAllText(Path.Combine(task, "schedstat"));
                    threads[int.Parse(Path.GetFileName(task), CultureInfo.InvariantCulture)] = long.Parse(text.AsSpan(0, text.IndexOf(' ')), CultureInfo.InvariantCulture);
                }
                catch (IOException)
                {
                    // the thread exited meanwhile
                }
            }
        }
        catch (IOException)
        {
            // the process is gone
        }
        return threads;
    }

    /// <summary>CPU time between two <see cref="ThreadCpu"/> readings of one process: what each thread alive at the
    /// second ran since the first (all of it for a thread started meanwhile).</summary>
    public static TimeSpan CpuBetween(Dictionary<int, long> before, Dictionary<int, long> after) =>
        TimeSpan.FromTicks(after.Sum(t => t.Value - before.GetValueOrDefault(t.Key)) / 100);

    /// <summary>CPU time used so far (user + system), in ticks of 10 ms.</summary>
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
