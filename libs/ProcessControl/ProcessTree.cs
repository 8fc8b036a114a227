namespace Platform.ProcessControl;

/// <summary>What a stop did.</summary>
public readonly record struct StopResult(int Terminated, int Killed, int Survivors)
{
    public bool AllGone => Survivors == 0;
}

/// <summary>Signals and stops whole process trees, walking /proc (not only the process group).</summary>
public static class ProcessTree
{
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(10);

    /// <summary>The root (if it is still the same process) and its live descendants.</summary>
    public static List<ProcessIdentity> Snapshot(ProcessIdentity root)
    {
        if (!ProcFs.IsAlive(root)) return [];
        return ProcFs.Tree(root.Pid).Select(s => new ProcessIdentity(s.Pid, s.StartTime)).ToList();
    }

    public static List<ProcessIdentity> Snapshot(int rootPid) =>
        ProcFs.Tree(rootPid).Select(s => new ProcessIdentity(s.Pid, s.StartTime)).ToList();

    /// <summary>Signals each process that is still the same process; returns how many were signalled.</summary>
    public static int Signal(IEnumerable<ProcessIdentity> processes, int signal)
    {
        var count = 0;
        foreach (var process in processes)
        {
            if (ProcFs.IsAlive(process) && Native.kill(process.Pid, signal) == 0) count++;
        }
        return count;
    }

    /// <summary>
    /// SIGTERM to the root and every descendant, up to <paramref name="grace"/> for them to go, then SIGKILL to every
    /// survivor (and to descendants started meanwhile), and a wait until none is left. Stopped processes get SIGCONT
    /// so that they can act on SIGTERM.
    /// </summary>
    public static Task<StopResult> StopAsync(ProcessIdentity root, TimeSpan grace, CancellationToken cancellationToken = default) =>
        StopAsync(root, grace, null, cancellationToken);

    /// <summary>As <see cref="StopAsync(ProcessIdentity, TimeSpan, CancellationToken)"/>, with <paramref name="more"/>
    /// processes that belong to the tree although they are no longer below its root (orphans re-parented elsewhere).</summary>
    public static async Task<StopResult> StopAsync(ProcessIdentity root, TimeSpan grace, Func<List<ProcessIdentity>>? more, CancellationToken cancellationToken = default)
    {
        List<ProcessIdentity> Snapshot(ProcessIdentity root) => more is null ? ProcessTree.Snapshot(root) : [.. ProcessTree.Snapshot(root).Union(more())];
        var tree = Snapshot(root);
        var terminated = Signal(tree, Native.SIGTERM);
        Signal(tree, Native.SIGCONT);

        var deadline = DateTime.UtcNow + grace;
        while (DateTime.UtcNow < deadline && tree.Any(ProcFs.IsAlive))
            await Task.Delay(Poll, cancellationToken);

        // Descendants may have been started during the grace (while their parent lived): take them in too.
        var survivors = tree.Concat(Snapshot(root)).Distinct().Where(ProcFs.IsAlive).ToList();
        var killed = Signal(survivors, Native.SIGKILL);

        var killDeadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (DateTime.UtcNow < killDeadline && survivors.Any(ProcFs.IsAlive))
            await Task.Delay(Poll, cancellationToken);
        return new StopResult(terminated, killed, survivors.Count(ProcFs.IsAlive));
    }

    /// <summary>
    /// Stops every process of a cgroup: SIGTERM (and SIGCONT) to each member, up to <paramref name="grace"/> for them to
    /// go, then <c>cgroup.kill</c> (every member, including those forked meanwhile, in one write) and a wait until the
    /// cgroup is empty.
    /// </summary>
    public static async Task<StopResult> StopCgroupAsync(string cgroup, TimeSpan grace, CancellationToken cancellationToken = default)
    {
        var members = Identify(Cgroup.Members(cgroup));
        var terminated = Signal(members, Native.SIGTERM);
        Signal(members, Native.SIGCONT);
        var deadline = DateTime.UtcNow + grace;
        while (DateTime.UtcNow < deadline && Cgroup.IsPopulated(cgroup))
            await Task.Delay(Poll, cancellationToken);
        var killed = Cgroup.Members(cgroup).Count;
        if (killed == 0) return new StopResult(terminated, 0, 0);
        var gone = await Cgroup.KillAsync(cgroup, TimeSpan.FromSeconds(5), cancellationToken);
        return new StopResult(terminated, killed, gone ? 0 : Cgroup.Members(cgroup).Count);
    }

    private static List<ProcessIdentity> Identify(IEnumerable<int> pids) =>
        [.. pids.Select(ProcFs.Identify).Where(p => p is not null).Select(p => p!.Value)];

    /// <summary>Sends one signal to a process if it is still the same process.</summary>
    public static bool Signal(ProcessIdentity process, int signal) => ProcFs.IsAlive(process) && Native.kill(process.Pid, signal) == 0;

    public const int SIGTERM = Native.SIGTERM;
    public const int SIGKILL = Native.SIGKILL;
}
