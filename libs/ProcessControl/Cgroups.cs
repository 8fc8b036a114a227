using System.Globalization;

namespace Platform.ProcessControl;

/// <summary>
/// A subtree of the cgroup v2 hierarchy that one owner (the Launcher) creates its instances' cgroups in, as systemd
/// and the kubelet contain services: every process an instance starts stays in its cgroup whatever it does (forks,
/// setsid, a parent that exits, a cleared environment), so a stop reaches all of them and <c>cgroup.kill</c> ends them
/// at once. Only the core interface files are used (<c>cgroup.procs</c>, <c>cgroup.kill</c>, <c>cgroup.events</c>): no
/// controller has to be enabled.
/// </summary>
public sealed class CgroupTree
{
    private CgroupTree(string root) => Root = root;

    /// <summary>The subtree's directory.</summary>
    public string Root { get; }

    /// <summary>
    /// The subtree <paramref name="name"/> under this process's own cgroup (or under <paramref name="parent"/>), created
    /// if need be; null when there is no writable cgroup v2 hierarchy with <c>cgroup.kill</c> (Linux 5.14), with the
    /// reason.
    /// </summary>
    public static CgroupTree? TryOpen(string name, string? parent, out string reason)
    {
        try
        {
            reason = "";
            parent ??= OwnCgroup(out reason);
            if (parent is null) return null;
            var root = Path.Combine(parent, name);
            Directory.CreateDirectory(root);
            if (!File.Exists(Path.Combine(root, "cgroup.kill")))
            {
                reason = $"{root} has no cgroup.kill (Linux 5.14 or later is needed)";
                return null;
            }
            reason = "";
            return new CgroupTree(root);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            reason = $"the cgroup v2 hierarchy is not writable here: {e.Message}";
            return null;
        }
    }

    /// <summary>This process's cgroup directory: the cgroup2 mount (from /proc/self/mountinfo) plus the path in
    /// /proc/self/cgroup's "0::" line.</summary>
    private static string? OwnCgroup(out string reason)
    {
        string? mount = null;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            // "36 25 0:31 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw": the mount point is field 5, the type follows " - ".
            var separator = line.IndexOf(" - ", StringComparison.Ordinal);
            if (separator < 0 || !line.AsSpan(separator + 3).StartsWith("cgroup2 ")) continue;
            var fields = line[..separator].Split(' ');
            if (fields.Length > 4 && fields[3] == "/") mount = Unescape(fields[4]);
            break;
        }
        if (mount is null)
        {
            reason = "no cgroup v2 hierarchy is mounted";
            return null;
        }
        var own = File.ReadLines("/proc/self/cgroup").FirstOrDefault(l => l.StartsWith("0::", StringComparison.Ordinal))?[3..];
        if (own is null)
        {
            reason = "this process is in no cgroup v2 group";
            return null;
        }
        reason = "";
        return Path.Join(mount, own.TrimStart('/'));
    }

    /// <summary>mountinfo escapes spaces and backslashes as octal (\040).</summary>
    private static string Unescape(string field) =>
        System.Text.RegularExpressions.Regex.Replace(field, @"\\([0-7]{3})", m => ((char)Convert.ToInt32(m.Groups[1].Value, 8)).ToString());

    /// <summary>Creates the cgroup of instance <paramref name="id"/> and returns its path.</summary>
    public string Create(string id) => Directory.CreateDirectory(Path.Combine(Root, id)).FullName;

    /// <summary>Removes the subtree's directory if nothing is left in it.</summary>
    public void TryRemove() => Cgroup.Remove(Root);
}

/// <summary>One cgroup v2 group, by its directory.</summary>
public static class Cgroup
{
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(5);

    /// <summary>Moves process <paramref name="pid"/> into the cgroup.</summary>
    public static void Add(string cgroup, int pid) =>
        File.WriteAllText(Path.Combine(cgroup, "cgroup.procs"), pid.ToString(CultureInfo.InvariantCulture));

    /// <summary>The processes in the cgroup and in the cgroups below it (a member may create its own).</summary>
    public static List<int> Members(string cgroup)
    {
        var members = new List<int>();
        try
        {
            foreach (var line in File.ReadLines(Path.Combine(cgroup, "cgroup.procs")))
                if (int.TryParse(line, NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) members.Add(pid);
            foreach (var child in Directory.EnumerateDirectories(cgroup)) members.AddRange(Members(child));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Removed meanwhile: nobody is in it.
        }
        return members;
    }

    /// <summary>Whether any process is in the cgroup or below it (<c>cgroup.events</c>: "populated 1").</summary>
    public static bool IsPopulated(string cgroup)
    {
        try
        {
            return File.ReadLines(Path.Combine(cgroup, "cgroup.events")).Any(l => l == "populated 1");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>SIGKILLs every process in the cgroup and below it at once (<c>cgroup.kill</c>), including those forked
    /// meanwhile, and waits up to <paramref name="timeout"/> until none is left; true when none is.</summary>
    public static async Task<bool> KillAsync(string cgroup, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        if (!IsPopulated(cgroup)) return true; // the common case at an exit: nothing left, nothing to write
        try
        {
            File.WriteAllText(Path.Combine(cgroup, "cgroup.kill"), "1");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return !IsPopulated(cgroup);
        }
        var deadline = DateTime.UtcNow + timeout;
        while (IsPopulated(cgroup) && DateTime.UtcNow < deadline) await Task.Delay(Poll, cancellationToken);
        return !IsPopulated(cgroup);
    }

    /// <summary>Removes the cgroup (and the empty ones below it); false when it still has members.</summary>
    public static bool Remove(string cgroup)
    {
        try
        {
            if (!Directory.Exists(cgroup)) return true;
            foreach (var child in Directory.EnumerateDirectories(cgroup)) Remove(child);
            Directory.Delete(cgroup); // rmdir: cgroupfs directories hold only interface files, removed with them
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
