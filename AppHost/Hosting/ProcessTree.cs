using System.Globalization;
using System.Runtime.InteropServices;

namespace Platform.AppHost.Hosting;

/// <summary>A process by its identity: pid plus start time (clock ticks since boot), so a reused pid is never confused.</summary>
public readonly record struct ProcessIdentity(int Pid, ulong StartTime);

/// <summary>
/// Reads process trees from /proc and signals them (DESIGN.md §8). The Launcher's issue moves this into a library
/// under libs/ that both use.
/// </summary>
public static partial class ProcessTree
{
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    /// <summary>The process's identity, or null when it does not exist or is a zombie.</summary>
    public static ProcessIdentity? Identify(int pid) =>
        ReadStat(pid) is { } stat && stat.State != 'Z' ? new ProcessIdentity(pid, stat.StartTime) : null;

    /// <summary>True when this very process (same start time) exists and is not a zombie.</summary>
    public static bool IsAlive(ProcessIdentity process) =>
        ReadStat(process.Pid) is { } stat && stat.StartTime == process.StartTime && stat.State != 'Z';

    /// <summary>The process and all its live descendants, parents before children.</summary>
    public static List<ProcessIdentity> Snapshot(int rootPid)
    {
        var children = new Dictionary<int, List<(int Pid, ulong Start)>>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) continue;
            if (ReadStat(pid) is not { } stat || stat.State == 'Z') continue;
            if (!children.TryGetValue(stat.ParentPid, out var list)) children[stat.ParentPid] = list = [];
            list.Add((pid, stat.StartTime));
        }

        var result = new List<ProcessIdentity>();
        if (Identify(rootPid) is not { } root) return result;
        result.Add(root);
        for (var i = 0; i < result.Count; i++)
        {
            if (!children.TryGetValue(result[i].Pid, out var list)) continue;
            result.AddRange(list.Select(c => new ProcessIdentity(c.Pid, c.Start)));
        }
        return result;
    }

    /// <summary>Sends a signal to each process that is still the same process; returns how many were signalled.</summary>
    public static int Signal(IEnumerable<ProcessIdentity> processes, int signal)
    {
        var count = 0;
        foreach (var process in processes)
        {
            if (IsAlive(process) && kill(process.Pid, signal) == 0) count++;
        }
        return count;
    }

    private readonly record struct Stat(char State, int ParentPid, ulong StartTime);

    private static Stat? ReadStat(int pid)
    {
        string text;
        try
        {
            text = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }

        // The command name (field 2) is in parentheses and may contain spaces: fields count from the last ')'.
        var close = text.LastIndexOf(')');
        if (close < 0) return null;
        var fields = text[(close + 2)..].Split(' ');
        // fields[0] is field 3 (state), fields[1] field 4 (ppid), fields[19] field 22 (starttime).
        if (fields.Length < 20) return null;
        return new Stat(fields[0][0],
            int.Parse(fields[1], CultureInfo.InvariantCulture),
            ulong.Parse(fields[19], CultureInfo.InvariantCulture));
    }
}
