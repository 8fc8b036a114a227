using System.Globalization;

namespace Platform.ProcessControl;

/// <summary>
/// A process by its identity: pid plus start time (clock ticks since boot, field 22 of /proc/PID/stat). A pid alone
/// is reused; the pair is not (within one boot).
/// </summary>
public readonly record struct ProcessIdentity(int Pid, ulong StartTime);

/// <summary>What /proc/PID/stat says of a process.</summary>
public readonly record struct ProcStat(int Pid, char State, int ParentPid, int ProcessGroup, int Session, ulong UserTicks, ulong SystemTicks, ulong StartTime, long RssPages)
{
    /// <summary>Z: exited and not yet reaped; it is not running, whatever its pid says.</summary>
    public bool IsZombie => State is 'Z' or 'X';

    /// <summary>T or t: stopped by a signal (SIGSTOP) or a tracer.</summary>
    public bool IsStopped => State is 'T' or 't';
}

/// <summary>Reads processes from /proc.</summary>
public static class ProcFs
{
    private static readonly long PageSize = Environment.SystemPageSize;

    /// <summary>Clock ticks per second (USER_HZ): 100 on Linux.</summary>
    public const int TicksPerSecond = 100;

    public static ProcStat? ReadStat(int pid)
    {
        string text;
        try
        {
            text = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        return ParseStat(pid, text);
    }

    internal static ProcStat? ParseStat(int pid, string text)
    {
        // The command name (field 2) is in parentheses and may contain spaces and ')': fields count from the last ')'.
        var close = text.LastIndexOf(')');
        if (close < 0 || close + 2 >= text.Length) return null;
        var f = text[(close + 2)..].Split(' ');
        // f[0] is field 3 (state), f[1] 4 (ppid), f[2] 5 (pgrp), f[3] 6 (session), f[11] 14 (utime),
        // f[12] 15 (stime), f[19] 22 (starttime), f[21] 24 (rss, pages).
        if (f.Length < 22) return null;
        return new ProcStat(pid, f[0][0],
            int.Parse(f[1], CultureInfo.InvariantCulture),
            int.Parse(f[2], CultureInfo.InvariantCulture),
            int.Parse(f[3], CultureInfo.InvariantCulture),
            ulong.Parse(f[11], CultureInfo.InvariantCulture),
            ulong.Parse(f[12], CultureInfo.InvariantCulture),
            ulong.Parse(f[19], CultureInfo.InvariantCulture),
            long.Parse(f[21], CultureInfo.InvariantCulture));
    }

    /// <summary>The identity of a live (not zombie) process, or null.</summary>
    public static ProcessIdentity? Identify(int pid) =>
        ReadStat(pid) is { IsZombie: false } stat ? new ProcessIdentity(pid, stat.StartTime) : null;

    /// <summary>True when this very process (same start time) exists and is not a zombie.</summary>
    public static bool IsAlive(ProcessIdentity process) =>
        ReadStat(process.Pid) is { IsZombie: false } stat && stat.StartTime == process.StartTime;

    /// <summary>This boot's id; with it a stored identity is never matched after a reboot.</summary>
    public static string BootId { get; } = ReadBootId();

    private static string ReadBootId()
    {
        try
        {
            return File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim();
        }
        catch (IOException)
        {
            return "";
        }
    }

    /// <summary>Every live process, by pid.</summary>
    public static Dictionary<int, ProcStat> All()
    {
        var all = new Dictionary<int, ProcStat>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) continue;
            if (ReadStat(pid) is { IsZombie: false } stat) all[pid] = stat;
        }
        return all;
    }

    /// <summary>
    /// The process and all its live descendants, parents before children. A process that called setsid stays a
    /// descendant (its parent link is kept) until its parent dies; then it belongs to the nearest subreaper.
    /// </summary>
    public static List<ProcStat> Tree(int rootPid)
    {
        // /proc/PID/task/TID/children lists each thread's children: walking them reads only the tree, not every
        // process on the machine. Kernels without CONFIG_PROC_CHILDREN lack the file: then scan all of /proc.
        if (!File.Exists($"/proc/{rootPid}/task/{rootPid}/children")) return Tree(rootPid, All());
        var result = new List<ProcStat>();
        if (ReadStat(rootPid) is not { IsZombie: false } root) return result;
        result.Add(root);
        var seen = new HashSet<int> { rootPid };
        for (var i = 0; i < result.Count; i++)
        {
            foreach (var child in Children(result[i].Pid))
            {
                if (seen.Add(child) && ReadStat(child) is { IsZombie: false } stat) result.Add(stat);
            }
        }
        return result;
    }

    private static IEnumerable<int> Children(int pid)
    {
        string[] tasks;
        try
        {
            tasks = Directory.GetDirectories($"/proc/{pid}/task");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            yield break;
        }
        foreach (var task in tasks)
        {
            string text;
            try
            {
                text = File.ReadAllText(Path.Combine(task, "children"));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            foreach (var part in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                if (int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var child)) yield return child;
            }
        }
    }

    public static List<ProcStat> Tree(int rootPid, Dictionary<int, ProcStat> all)
    {
        var result = new List<ProcStat>();
        if (!all.TryGetValue(rootPid, out var root)) return result;
        var children = all.Values.ToLookup(s => s.ParentPid);
        result.Add(root);
        for (var i = 0; i < result.Count; i++) result.AddRange(children[result[i].Pid]);
        return result;
    }

    /// <summary>Resident memory and CPU time (user + system) of a set of processes.</summary>
    public static (long RssBytes, TimeSpan CpuTime) Usage(IEnumerable<ProcStat> processes)
    {
        long rss = 0;
        ulong ticks = 0;
        foreach (var p in processes)
        {
            rss += p.RssPages * PageSize;
            ticks += p.UserTicks + p.SystemTicks;
        }
        return (rss, TimeSpan.FromSeconds((double)ticks / TicksPerSecond));
    }
}
