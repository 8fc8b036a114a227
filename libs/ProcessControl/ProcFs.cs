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
        // One read into a stack buffer and a parse over bytes: the monitor probes thousands of pids per cycle.
        Span<byte> buffer = stackalloc byte[1024];
        int length;
        try
        {
            using var handle = File.OpenHandle($"/proc/{pid}/stat");
            length = RandomAccess.Read(handle, buffer, 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        return ParseStat(pid, buffer[..length]);
    }

    public static ProcStat? ParseStat(int pid, ReadOnlySpan<byte> text)
    {
        // The command name (field 2) is in parentheses and may contain spaces and ')': fields count from the last ')'.
        var close = text.LastIndexOf((byte)')');
        if (close < 0 || close + 2 >= text.Length) return null;
        var rest = text[(close + 2)..];
        // Field 3 (state), 4 (ppid), 5 (pgrp), 6 (session), 14 (utime), 15 (stime), 22 (starttime), 24 (rss, pages).
        Span<long> values = stackalloc long[25];
        var state = (char)rest[0];
        var field = 3;
        var at = 0;
        while (field <= 24 && at < rest.Length)
        {
            var next = rest[at..].IndexOf((byte)' ');
            var token = next < 0 ? rest[at..] : rest[at..(at + next)];
            if (field is 4 or 5 or 6 or 14 or 15 or 22 or 24)
            {
                if (!System.Buffers.Text.Utf8Parser.TryParse(token.TrimEnd((byte)'\n'), out long value, out _)) return null;
                values[field] = value;
            }
            field++;
            if (next < 0) break;
            at += next + 1;
        }
        if (field <= 24) return null;
        return new ProcStat(pid, state, (int)values[4], (int)values[5], (int)values[6],
            (ulong)values[14], (ulong)values[15], (ulong)values[22], values[24]);
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
        foreach (var pid in Pids())
        {
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

    /// <summary>The pids in /proc.</summary>
    public static IEnumerable<int> Pids()
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) yield return pid;
    }

    /// <summary>The live processes whose environment holds <paramref name="name"/>=<paramref name="value"/>
    /// (/proc/PID/environ: the environment they were started with, so a process that clears it is not found).</summary>
    public static List<ProcessIdentity> WithEnvironment(string name, string value)
    {
        var entry = System.Text.Encoding.UTF8.GetBytes($"\0{name}={value}\0");
        var found = new List<ProcessIdentity>();
        foreach (var pid in Pids())
        {
            byte[] environ;
            try
            {
                environ = File.ReadAllBytes($"/proc/{pid}/environ");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // gone, or a kernel thread
            }
            // Each entry ends with NUL; the first one has none before it.
            if (!environ.AsSpan().StartsWith(entry.AsSpan(1)) && environ.AsSpan().IndexOf(entry) < 0) continue;
            if (ReadStat(pid) is { IsZombie: false } stat) found.Add(new ProcessIdentity(pid, stat.StartTime));
        }
        return found;
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
