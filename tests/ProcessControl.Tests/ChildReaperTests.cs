using Platform.ProcessControl;

namespace Platform.ProcessControl.Tests;

public class ChildReaperTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private static ChildReaper Reaper => ChildReaper.Shared;
    private static readonly Dictionary<string, string> Env = new() { ["PATH"] = "/usr/bin:/bin", ["GREETING"] = "hello" };

    private static SpawnedProcess Sh(string script, StdioTarget? stdout = null, StdioTarget? stderr = null, string? cwd = null) =>
        Reaper.Spawn(new SpawnRequest("/bin/sh", ["-c", script], Env, cwd, stdout, stderr));

    [Fact]
    public async Task An_exit_hook_runs_on_the_reapers_thread_with_the_status_before_Exited_completes_and_a_removed_one_never_runs()
    {
        var child = Sh("sleep 0.2; exit 7");
        var removed = Sh("sleep 0.2; exit 8");
        var seen = new TaskCompletionSource<(ExitStatus Status, bool ExitedAlready, string? Thread)>();
        Reaper.OnExit(child.Pid, status => seen.TrySetResult((status, child.Exited.IsCompleted, Thread.CurrentThread.Name)));
        var ranRemoved = false;
        Reaper.OnExit(removed.Pid, _ => ranRemoved = true);
        Reaper.OnExit(removed.Pid, null);

        var (status, exitedAlready, thread) = await seen.Task.WaitAsync(Timeout);
        Assert.Equal(new ExitStatus(7, null), status);
        Assert.False(exitedAlready); // the hook comes first: Exited's continuations wait for the thread pool
        Assert.Equal("child reaper", thread);
        Assert.Equal(new ExitStatus(7, null), await child.Exited.WaitAsync(Timeout));
        Assert.Equal(new ExitStatus(8, null), await removed.Exited.WaitAsync(Timeout));
        Assert.False(ranRemoved);
    }

    [Fact]
    public async Task A_child_runs_with_exactly_the_given_environment_and_its_exit_code_is_reported()
    {
        var child = Sh("echo $GREETING; echo oops >&2; echo \"[$HOME]\"; exit 3", StdioTarget.Pipe, StdioTarget.Pipe);

        var stdout = await new StreamReader(child.StandardOutput!).ReadToEndAsync();
        var stderr = await new StreamReader(child.StandardError!).ReadToEndAsync();
        var exit = await child.Exited.WaitAsync(Timeout);

        Assert.Equal("hello\n[]\n", stdout);
        Assert.Equal("oops\n", stderr);
        Assert.Equal(new ExitStatus(3, null), exit);
    }

    [Fact]
    public async Task A_child_gets_its_own_session_and_process_group_and_default_signal_dispositions()
    {
        var child = Reaper.Spawn(new SpawnRequest("sleep", ["30"], Env));
        try
        {
            var stat = ProcFs.ReadStat(child.Pid)!.Value;
            Assert.Equal(child.Pid, stat.Session);
            Assert.Equal(child.Pid, stat.ProcessGroup);
            Assert.Equal(Environment.ProcessId, stat.ParentPid);
            // The runtime ignores SIGPIPE; the child must not inherit that.
            var ignored = Convert.ToUInt64(File.ReadAllLines($"/proc/{child.Pid}/status")
                .Single(l => l.StartsWith("SigIgn:", StringComparison.Ordinal))[7..].Trim(), 16);
            Assert.Equal(0UL, ignored & 0x7FFFFFFF); // no standard signal (1-31) ignored; 32+ are glibc's own
        }
        finally
        {
            ProcessTree.Signal(child.Identity, ProcessTree.SIGKILL);
        }
        Assert.Equal(new ExitStatus(null, 9), await child.Exited.WaitAsync(Timeout));
    }

    [Fact]
    public async Task Output_to_files_is_appended_and_the_working_directory_is_used()
    {
        var dir = Directory.CreateTempSubdirectory("spawn-").FullName;
        var log = Path.Combine(dir, "out.log");
        File.WriteAllText(log, "before\n");

        var child = Sh("pwd; echo after", StdioTarget.File(log), StdioTarget.File(log), cwd: dir);
        await child.Exited.WaitAsync(Timeout);

        Assert.Equal($"before\n{dir}\nafter\n", File.ReadAllText(log));
        Directory.Delete(dir, true);
    }

    [Fact]
    public async Task An_orphaned_setsid_grandchild_is_adopted_and_reaped_leaving_no_zombie()
    {
        var pidFile = Path.GetTempFileName();
        // Listen before anything starts: on a loaded machine the grandchild may be gone before its pid is read.
        var reaped = new System.Collections.Concurrent.ConcurrentDictionary<int, ExitStatus>();
        void OnReaped(int pid, ExitStatus status) => reaped[pid] = status;
        Reaper.Reaped += OnReaped;
        try
        {
            var child = Sh($"setsid sh -c 'echo $$ > {pidFile}; sleep 0.3' & sleep 0.1; exit 0");
            await child.Exited.WaitAsync(Timeout);
            var grandchild = int.Parse(File.ReadAllText(pidFile).Trim());

            // Its parent is gone, so it is ours now (we are a subreaper), and we reap it when it exits.
            if (ProcFs.ReadStat(grandchild) is { IsZombie: false } stat) Assert.Equal(Environment.ProcessId, stat.ParentPid);
            var deadline = DateTime.UtcNow + Timeout;
            while (!reaped.ContainsKey(grandchild) && DateTime.UtcNow < deadline) await Task.Delay(10);
            Assert.Equal(new ExitStatus(0, null), reaped[grandchild]);
            Assert.Null(ProcFs.ReadStat(grandchild)); // gone entirely: not a zombie
        }
        finally
        {
            Reaper.Reaped -= OnReaped;
            File.Delete(pidFile);
        }
    }

    [Theory]
    [InlineData("/nonexistent/agent", true, false)]
    [InlineData("no-such-command-anywhere", true, false)]
    [InlineData("NOT_EXECUTABLE", false, true)]
    public void Spawn_errors_say_what_is_wrong(string executable, bool notFound, bool denied)
    {
        var file = Path.GetTempFileName(); // mode 0600: not executable
        if (executable == "NOT_EXECUTABLE") executable = file;

        var error = Assert.Throws<SpawnException>(() => Reaper.Spawn(new SpawnRequest(executable, [], Env)));

        Assert.Equal(notFound, error.NotFound);
        Assert.Equal(denied, error.PermissionDenied);
        Assert.Contains(executable, error.Message);
        File.Delete(file);
    }

    [Fact]
    public void A_missing_working_directory_fails_the_spawn()
    {
        var error = Assert.Throws<SpawnException>(() => Reaper.Spawn(new SpawnRequest("/bin/true", [], Env, "/nonexistent/dir")));
        Assert.True(error.NotFound);
    }
}

public class ProcessTreeTests
{
    private static readonly Dictionary<string, string> Env = new() { ["PATH"] = "/usr/bin:/bin" };

    private static async Task<List<ProcessIdentity>> TreeOfAsync(SpawnedProcess root, int size)
    {
        List<ProcessIdentity> tree = [];
        for (var i = 0; i < 200 && tree.Count < size; i++)
        {
            await Task.Delay(10);
            tree = ProcessTree.Snapshot(root.Identity);
        }
        Assert.Equal(size, tree.Count);
        return tree;
    }

    [Fact]
    public async Task A_tree_with_grandchildren_and_a_setsid_escaper_that_ignore_SIGTERM_is_stopped_with_no_survivor()
    {
        var root = ChildReaper.Shared.Spawn(new SpawnRequest("/bin/sh",
            ["-c", "trap '' TERM; sleep 300 & setsid sleep 301 & sh -c 'sleep 302 & wait' & wait"], Env));
        var tree = await TreeOfAsync(root, 5);

        var result = await ProcessTree.StopAsync(root.Identity, TimeSpan.FromMilliseconds(200));

        Assert.True(result.AllGone);
        Assert.Equal(5, result.Terminated);
        Assert.True(result.Killed >= 3, $"killed {result.Killed}");
        Assert.DoesNotContain(tree, ProcFs.IsAlive);
        Assert.Equal(new ExitStatus(null, 9), await root.Exited.WaitAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task A_tree_that_honours_SIGTERM_is_gone_before_the_grace_and_nothing_is_killed()
    {
        var root = ChildReaper.Shared.Spawn(new SpawnRequest("/bin/sh", ["-c", "sleep 300 & sleep 301 & wait"], Env));
        await TreeOfAsync(root, 3);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var result = await ProcessTree.StopAsync(root.Identity, TimeSpan.FromSeconds(10));

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5));
        Assert.Equal(new StopResult(3, 0, 0), result);
        Assert.Equal(new ExitStatus(null, 15), await root.Exited.WaitAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task A_stopped_process_is_continued_so_it_can_honour_SIGTERM()
    {
        var root = ChildReaper.Shared.Spawn(new SpawnRequest("sleep", ["300"], Env));
        ProcessTree.Signal(root.Identity, 19); // SIGSTOP
        for (var i = 0; i < 100 && ProcFs.ReadStat(root.Pid) is not { IsStopped: true }; i++) await Task.Delay(10);

        var result = await ProcessTree.StopAsync(root.Identity, TimeSpan.FromSeconds(5));

        Assert.Equal(0, result.Killed);
        Assert.Equal(new ExitStatus(null, 15), await root.Exited.WaitAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task An_identity_with_another_start_time_is_not_the_process_even_with_the_same_pid()
    {
        var root = ChildReaper.Shared.Spawn(new SpawnRequest("sleep", ["300"], Env));
        var impostor = root.Identity with { StartTime = root.Identity.StartTime - 1 };

        Assert.True(ProcFs.IsAlive(root.Identity));
        Assert.False(ProcFs.IsAlive(impostor));
        Assert.False(ProcessTree.Signal(impostor, ProcessTree.SIGKILL)); // never signals a stranger
        Assert.Equal(ExitStatus.Unknown, await new PidfdMonitor().WatchAsync(impostor));
        Assert.True(ProcFs.IsAlive(root.Identity));

        ProcessTree.Signal(root.Identity, ProcessTree.SIGKILL);
        await root.Exited;
    }

    [Fact]
    public async Task The_pidfd_monitor_reports_an_exit_as_it_happens()
    {
        using var monitor = new PidfdMonitor();
        var root = ChildReaper.Shared.Spawn(new SpawnRequest("sleep", ["300"], Env));
        var watched = monitor.WatchAsync(root.Identity);
        await Task.Delay(50);
        Assert.False(watched.IsCompleted);

        ProcessTree.Signal(root.Identity, ProcessTree.SIGKILL);

        await watched.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(0, monitor.Count);
    }
}

public sealed class ProcFsTests
{
    [Fact]
    public void Stat_fields_count_from_the_last_parenthesis_of_the_command_name()
    {
        var line = "4242 (a b) c) (x) S 17 4242 4242 0 -1 4194560 100 0 0 0 123 45 0 0 20 0 1 0 987654 1000000 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        var stat = ProcFs.ParseStat(4242, System.Text.Encoding.UTF8.GetBytes(line))!.Value;
        Assert.Equal(('S', 17, 4242, 4242), (stat.State, stat.ParentPid, stat.ProcessGroup, stat.Session));
        Assert.Equal((123UL, 45UL, 987654UL, 321L), (stat.UserTicks, stat.SystemTicks, stat.StartTime, stat.RssPages));
        Assert.Null(ProcFs.ParseStat(1, "1 (truncated) S 0 1"u8));
    }

    [Fact]
    public void This_process_reads_as_running_with_its_real_parent()
    {
        var stat = ProcFs.ReadStat(Environment.ProcessId)!.Value;
        var ppid = File.ReadAllLines("/proc/self/status").Single(l => l.StartsWith("PPid:", StringComparison.Ordinal)).Split('\t', StringSplitOptions.RemoveEmptyEntries)[1].Trim();
        Assert.Equal(int.Parse(ppid, System.Globalization.CultureInfo.InvariantCulture), stat.ParentPid);
        Assert.False(stat.IsZombie);
        Assert.True(stat.StartTime > 0);
        Assert.True(stat.RssPages > 0);
    }
}

/// <summary>
/// A child started in a cgroup: directly (clone3 with CLONE_INTO_CGROUP, through libplatformspawn.so) or through the
/// /bin/sh gate; both give the program the same start. Real cgroup v2 groups under this process's own.
/// </summary>
public sealed class CgroupSpawnTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private static readonly Dictionary<string, string> Env = new() { ["PATH"] = "/usr/bin:/bin", ["GREETING"] = "hello" };
    private readonly CgroupTree _tree = CgroupTree.TryOpen($"platform-spawn-tests-{Guid.NewGuid():N}", null, out var reason)
        ?? throw new InvalidOperationException($"these tests need a writable cgroup v2 hierarchy: {reason}");
    private readonly List<string> _groups = [];

    private string Group()
    {
        var group = _tree.Create($"g{_groups.Count}");
        _groups.Add(group);
        return group;
    }

    /// <summary>The group's path as /proc/PID/cgroup names it ("0::/a/b").</summary>
    private static string Named(string group) =>
        File.ReadLines("/proc/self/cgroup").Single(l => l.StartsWith("0::", StringComparison.Ordinal)) is var own &&
        File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(" - ")).First(p => p.Length > 1 && p[1].StartsWith("cgroup2 ", StringComparison.Ordinal))[0].Split(' ')[4] is var mount
            ? "0::/" + Path.GetRelativePath(mount, group)
            : throw new InvalidOperationException();

    [Fact]
    public void Where_gcc_is_installed_the_build_made_the_library_and_children_start_directly_in_their_cgroup()
    {
        // The build compiles native/platform_spawn.c with gcc when it is there (Platform.ProcessControl.csproj).
        Assert.Equal(File.Exists("/usr/bin/gcc"), File.Exists(Path.Combine(AppContext.BaseDirectory, "libplatformspawn.so")));
        if (File.Exists("/usr/bin/gcc")) Assert.True(CgroupSpawn.Available, CgroupSpawn.Unavailable);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_child_and_what_it_forks_are_in_its_cgroup_with_the_same_start_either_way(bool gate)
    {
        var group = Group();
        var script = "grep ^0:: /proc/self/cgroup; sh -c 'grep ^0:: /proc/self/cgroup'; pwd; echo \"$GREETING\"; grep SigIgn /proc/self/status; " +
                     "read line; echo \"got $line\"; echo oops >&2; exit 4";
        var child = ChildReaper.Shared.Spawn(new SpawnRequest("sh", ["-c", script], Env, "/tmp", StdioTarget.Pipe, StdioTarget.Pipe)
        {
            Cgroup = group,
            StdinPipe = true,
            ThroughGate = gate,
        });
        var stat = ProcFs.ReadStat(child.Pid)!.Value;
        Assert.Equal((child.Pid, child.Pid, Environment.ProcessId), (stat.Session, stat.ProcessGroup, stat.ParentPid));
        Assert.Contains(child.Pid, Cgroup.Members(group));
        await child.StandardInput!.WriteAsync("line\n"u8.ToArray());
        await child.StandardInput.FlushAsync();

        var stdout = await new StreamReader(child.StandardOutput!).ReadToEndAsync();
        var stderr = await new StreamReader(child.StandardError!).ReadToEndAsync();
        Assert.Equal(new ExitStatus(4, null), await child.Exited.WaitAsync(Timeout));
        var name = Named(group);
        var lines = stdout.Split('\n');
        Assert.Equal([name, name, "/tmp", "hello", "got line", ""], lines.Where(l => !l.StartsWith("SigIgn:", StringComparison.Ordinal)));
        // No standard signal ignored (the runtime ignores SIGPIPE; the child must not inherit that). glibc's
        // posix_spawn leaves its two internal real-time signals (32, 33) ignored in the gate; they are not asked about.
        var ignored = Convert.ToUInt64(lines.Single(l => l.StartsWith("SigIgn:", StringComparison.Ordinal))[7..].Trim(), 16);
        Assert.Equal(0UL, ignored & 0x7FFFFFFF);
        Assert.Equal("oops\n", stderr);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Output_files_are_appended_and_nothing_is_left_of_a_start_that_fails(bool gate)
    {
        var group = Group();
        var output = Path.Combine(Directory.CreateTempSubdirectory("cgroup-spawn-").FullName, "out.log");
        await File.WriteAllTextAsync(output, "before\n");
        var child = ChildReaper.Shared.Spawn(new SpawnRequest("sh", ["-c", "echo after"], Env, null, StdioTarget.File(output)) { Cgroup = group, ThroughGate = gate });
        Assert.Equal(new ExitStatus(0, null), await child.Exited.WaitAsync(Timeout));
        Assert.Equal("before\nafter\n", await File.ReadAllTextAsync(output));

        // Exactly the environment asked for (the gate's shell adds nothing either).
        var env = ChildReaper.Shared.Spawn(new SpawnRequest("env", [], Env, "/tmp", StdioTarget.Pipe) { Cgroup = group, ThroughGate = gate });
        var printed = await new StreamReader(env.StandardOutput!).ReadToEndAsync();
        Assert.Equal(Env.Select(kv => $"{kv.Key}={kv.Value}").Order(), printed.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order());
        Assert.Equal(new ExitStatus(0, null), await env.Exited.WaitAsync(Timeout));

        var missing = Assert.Throws<SpawnException>(() => ChildReaper.Shared.Spawn(new SpawnRequest("sh", ["-c", "true"], Env, "/no/such/directory") { Cgroup = group, ThroughGate = gate }));
        Assert.Contains("No such file or directory", missing.Message, StringComparison.Ordinal);
        var notExecutable = Assert.Throws<SpawnException>(() => ChildReaper.Shared.Spawn(new SpawnRequest(output, [], Env) { Cgroup = group, ThroughGate = gate }));
        Assert.True(notExecutable.PermissionDenied, notExecutable.Message);
        await WaitForAsync(() => !Cgroup.IsPopulated(group));
    }

    private static async Task WaitForAsync(Func<bool> condition)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < Timeout, "timed out");
            await Task.Delay(20);
        }
    }

    public void Dispose()
    {
        foreach (var group in _groups)
        {
            Cgroup.KillAsync(group, Timeout).GetAwaiter().GetResult();
            Cgroup.Remove(group);
        }
        _tree.TryRemove();
    }
}
