using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Platform.ProcessControl;

/// <summary>Where a spawned process's stdout or stderr goes.</summary>
public abstract record StdioTarget
{
    /// <summary>/dev/null.</summary>
    public static StdioTarget Null { get; } = new FileTarget("/dev/null");

    /// <summary>Appended to a file: the child keeps writing whatever happens to its parent.</summary>
    public static StdioTarget File(string path) => new FileTarget(path);

    /// <summary>A pipe the parent reads (<see cref="SpawnedProcess.StandardOutput"/>).</summary>
    public static StdioTarget Pipe { get; } = new PipeTarget();

    internal sealed record FileTarget(string Path) : StdioTarget;

    internal sealed record PipeTarget : StdioTarget;
}

/// <summary>What to start. <see cref="Executable"/> is a path (looked up on PATH when it has no '/').</summary>
public sealed record SpawnRequest(
    string Executable,
    IReadOnlyList<string> Arguments,
    IReadOnlyDictionary<string, string> Environment,
    string? WorkingDirectory = null,
    StdioTarget? Stdout = null,
    StdioTarget? Stderr = null)
{
    /// <summary>Give the child a pipe as stdin (<see cref="SpawnedProcess.StandardInput"/>); /dev/null otherwise.</summary>
    public bool StdinPipe { get; init; }

    /// <summary>A cgroup v2 directory to start the child in: it is placed there before the program runs its first
    /// instruction (see <see cref="ChildReaper.Spawn"/>).</summary>
    public string? Cgroup { get; init; }

    /// <summary>Start a contained child through the /bin/sh gate even where clone3 could place it directly (tests
    /// cover both ways with it).</summary>
    internal bool ThroughGate { get; init; }
}

/// <summary>A process this reaper started.</summary>
public sealed class SpawnedProcess(ProcessIdentity identity, Task<ExitStatus> exited, Stream? stdout, Stream? stderr, Stream? stdin = null)
{
    /// <summary>The write end of the stdin pipe, when <see cref="SpawnRequest.StdinPipe"/> was set.</summary>
    public Stream? StandardInput { get; } = stdin;

    public ProcessIdentity Identity { get; } = identity;

    public int Pid => Identity.Pid;

    /// <summary>Completes the moment the process exits (the reaper's waitid returns), with its status.</summary>
    public Task<ExitStatus> Exited { get; } = exited;

    /// <summary>The read end of the stdout pipe, when stdout is <see cref="StdioTarget.Pipe"/>.</summary>
    public Stream? StandardOutput { get; } = stdout;

    public Stream? StandardError { get; } = stderr;
}

/// <summary>The process could not be started: nothing was started.</summary>
public sealed class SpawnException(int errno, string message) : Exception(message)
{
    public int Errno { get; } = errno;

    public bool NotFound => Errno == Native.ENOENT;

    public bool PermissionDenied => Errno == Native.EACCES;
}

/// <summary>
/// Starts processes with posix_spawn, each in a new session (setsid) with default signal dispositions, and reaps
/// every child of this process on one thread blocked in waitid(P_ALL): exits are seen at once (no polling), and,
/// with this process a child subreaper, orphaned descendants (double forks, setsid escapers) are reaped too, so no
/// zombie is left. Own spawning and waiting end to end: in a process that has a ChildReaper, start nothing with
/// System.Diagnostics.Process (its WaitForExit would never return; docs/architecture.md §6).
/// </summary>
public sealed unsafe class ChildReaper : IDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<int, TaskCompletionSource<ExitStatus>> _waiters = [];
    // Exits of pids nobody waits for yet: a child can exit before Spawn has registered its waiter (spawns run in
    // parallel, outside the lock). Kept for a second: a pid is not reused that fast (pid_max is in the millions).
    private readonly Dictionary<int, (ExitStatus Status, long At)> _unclaimed = [];
    private static readonly TimeSpan UnclaimedFor = TimeSpan.FromSeconds(1);
    private readonly AutoResetEvent _childAdded = new(false);
    private int _spawning; // spawns between posix_spawn and their waiter's registration (guarded by _lock)
    private readonly Dictionary<int, Action<ExitStatus>> _exitHooks = []; // guarded by _lock
    private readonly Thread _thread;
    private volatile bool _disposed;
    private volatile bool _stopping;

    private static ChildReaper? _shared;
    private static readonly Lock SharedLock = new();

    /// <summary>
    /// The process's reaper. There can be only one: two threads in waitid(P_ALL) would take each other's exits.
    /// Created on first use; makes this process a child subreaper.
    /// </summary>
    public static ChildReaper Shared
    {
        get
        {
            lock (SharedLock) return _shared ??= new ChildReaper();
        }
    }

    private ChildReaper(bool becomeSubreaper = true)
    {
        if (becomeSubreaper && Native.prctl(Native.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
            throw new InvalidOperationException($"prctl(PR_SET_CHILD_SUBREAPER) failed: {Native.Error(Marshal.GetLastPInvokeError())}");
        _thread = new Thread(Reap) { IsBackground = true, Name = "child reaper" };
        _thread.Start();
    }

    /// <summary>Children started here whose exit has not been seen yet.</summary>
    public int Running
    {
        get { lock (_lock) return _waiters.Count; }
    }

    /// <summary>Raised (on the reaper thread) for every reaped process, ours or an adopted orphan.</summary>
    public event Action<int, ExitStatus>? Reaped;

    public SpawnedProcess Spawn(SpawnRequest request) => Start(request, hold: false).Process;

    /// <summary>
    /// Starts the child in its cgroup (<see cref="SpawnRequest.Cgroup"/> is required) but holds it at the gate, before
    /// the program's first instruction: <see cref="HeldProcess.Release"/> lets it run, at once, later. Moving a process
    /// into a cgroup can wait for an RCU grace period (several ms after an idle spell); a held process has paid it.
    /// </summary>
    public HeldProcess SpawnHeld(SpawnRequest request)
    {
        if (request.Cgroup is null) throw new ArgumentException("a held process needs a cgroup", nameof(request));
        var (process, gate) = Start(request, hold: true);
        return new HeldProcess(process, gate);
    }

    private (SpawnedProcess Process, int Gate) Start(SpawnRequest request, bool hold)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var executable = Resolve(request.Executable, request.Environment);
        if (request.Cgroup is { } group && !hold && !request.ThroughGate && CgroupSpawn.Available && StartInCgroup(request, executable, group) is { } direct)
            return (direct, -1);
        var pipes = new StdioPipes();
        var gate = new int[] { -1, -1 };
        using var strings = new NativeStrings();
        var attr = NativeMemory.AllocZeroed(Native.SpawnAttrSize);
        var actions = NativeMemory.AllocZeroed(Native.FileActionsSize);
        var sigset = NativeMemory.AllocZeroed(Native.SigSetSize);
        try
        {
            Check(Native.posix_spawnattr_init(attr), "posix_spawnattr_init");
            Check(Native.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init");
            // New session and process group; an empty signal mask and default dispositions (the runtime ignores
            // SIGPIPE, and ignored signals would otherwise be inherited across exec).
            Check(Native.posix_spawnattr_setflags(attr, (short)(Native.POSIX_SPAWN_SETSID | Native.POSIX_SPAWN_SETSIGMASK | Native.POSIX_SPAWN_SETSIGDEF)), "setflags");
            Native.sigemptyset(sigset);
            Check(Native.posix_spawnattr_setsigmask(attr, sigset), "setsigmask");
            Native.sigfillset(sigset);
            Native.sigdelset(sigset, Native.SIGKILL);
            Native.sigdelset(sigset, 19); // SIGSTOP
            Check(Native.posix_spawnattr_setsigdefault(attr, sigset), "setsigdefault");

            if (request.StdinPipe)
            {
                MakePipe(pipes.Stdin);
                Check(Native.posix_spawn_file_actions_adddup2(actions, pipes.Stdin[0], 0), "stdin pipe");
            }
            else Check(Native.posix_spawn_file_actions_addopen(actions, 0, strings.Utf8("/dev/null"), Native.O_RDONLY, 0), "stdin");
            AddStdio(actions, 1, request.Stdout ?? StdioTarget.Null, pipes.Stdout, strings.Utf8);
            AddStdio(actions, 2, request.Stderr ?? StdioTarget.Null, pipes.Stderr, strings.Utf8);
            if (request.WorkingDirectory is { } cwd)
                Check(Native.posix_spawn_file_actions_addchdir_np(actions, strings.Utf8(cwd)), "addchdir");

            List<string> arguments = [request.Executable, .. request.Arguments];
            if (request.Cgroup is not null)
            {
                // posix_spawn cannot place a child in a cgroup (clone3's CLONE_INTO_CGROUP is not reachable from
                // here), and a child moved after it started could fork first. So the child starts as a gate: /bin/sh
                // waiting on a pipe (fd 3) until it has been moved, then exec'ing the program under the same pid.
                if (Native.access(executable, Native.X_OK) != 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    throw new SpawnException(errno, $"cannot start {request.Executable}: {Native.Error(errno)}");
                }
                MakePipe(gate);
                Check(Native.posix_spawn_file_actions_adddup2(actions, gate[0], GateFd), "gate pipe");
                arguments = ["/bin/sh", "-c", GateScript(request.Environment.ContainsKey("PWD")), executable, .. request.Arguments];
                executable = "/bin/sh";
            }
            var argv = strings.Array(arguments);
            var envp = strings.Environment(request.Environment);
            var path = strings.Utf8(executable);

            var tcs = new TaskCompletionSource<ExitStatus>(TaskCreationOptions.RunContinuationsAsynchronously);
            var rc = Spawn((out int child) =>
            {
                int spawned;
                var result = Native.posix_spawn(&spawned, path, actions, attr, argv, envp);
                child = spawned;
                return result;
            }, tcs, out var pid)!.Value;
            if (rc != 0) throw new SpawnException(rc, $"cannot start {request.Executable}: {Native.Error(rc)}");
            _childAdded.Set();
            var held = -1;
            if (request.Cgroup is { } cgroup)
            {
                Place(pid, cgroup, gate);
                if (hold) (held, gate[1]) = (gate[1], -1); // the caller's now
                else Release(pid, gate[1]);
            }

            return (pipes.Process(pid, tcs.Task), held);
        }
        catch
        {
            pipes.CloseAll();
            throw;
        }
        finally
        {
            CloseBoth(gate);
            pipes.CloseChildEnds();
            Native.posix_spawn_file_actions_destroy(actions);
            Native.posix_spawnattr_destroy(attr);
            NativeMemory.Free(attr);
            NativeMemory.Free(actions);
            NativeMemory.Free(sigset);
        }
    }

    /// <summary>
    /// Starts the program directly in its cgroup (<see cref="CgroupSpawn"/>): descriptors opened here and dup'ed onto
    /// 0-2 in the child, which is born in the group, in a new session, with default signal dispositions and an empty
    /// mask, as the gated path gives it. Null when the kernel refuses clone3's cgroup placement (nothing was started).
    /// </summary>
    private SpawnedProcess? StartInCgroup(SpawnRequest request, string executable, string cgroup)
    {
        var pipes = new StdioPipes();
        var opened = new List<int>();
        using var strings = new NativeStrings();
        try
        {
            int Open(string path, int flags, string what)
            {
                var fd = Native.open(path, flags | Native.O_CLOEXEC, 0x1A4 /* 0644 */);
                if (fd < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    throw new SpawnException(errno, $"cannot open {what} {path}: {Native.Error(errno)}");
                }
                opened.Add(fd);
                return fd;
            }

            int Output(StdioTarget target, int[] pipe)
            {
                if (target is StdioTarget.FileTarget file) return Open(file.Path, Native.O_WRONLY | Native.O_CREAT | Native.O_APPEND, "the output file");
                MakePipe(pipe);
                return pipe[1];
            }

            var group = Open(cgroup, Native.O_PATH | Native.O_DIRECTORY, "the cgroup");
            int stdin;
            if (request.StdinPipe)
            {
                MakePipe(pipes.Stdin);
                stdin = pipes.Stdin[0];
            }
            else stdin = Open("/dev/null", Native.O_RDONLY, "stdin");
            var stdio = stackalloc int[] { stdin, Output(request.Stdout ?? StdioTarget.Null, pipes.Stdout), Output(request.Stderr ?? StdioTarget.Null, pipes.Stderr) };
            var argv = strings.Array([request.Executable, .. request.Arguments]);
            var envp = strings.Environment(request.Environment);
            var cwd = request.WorkingDirectory is { } directory ? strings.Utf8(directory) : null;

            var tcs = new TaskCompletionSource<ExitStatus>(TaskCreationOptions.RunContinuationsAsynchronously);
            var path = strings.Utf8(executable);
            var rc = Spawn((out int child) => CgroupSpawn.TryStart(path, argv, envp, group, stdio, cwd, out child), tcs, out var pid);
            if (rc is null)
            {
                pipes.CloseAll();
                return null;
            }
            if (rc != 0) throw new SpawnException(rc.Value, $"cannot start {request.Executable}: {Native.Error(rc.Value)}");
            _childAdded.Set();
            return pipes.Process(pid, tcs.Task);
        }
        catch
        {
            pipes.CloseAll();
            throw;
        }
        finally
        {
            foreach (var fd in opened) Native.close(fd);
            pipes.CloseChildEnds();
        }
    }

    private delegate int? SpawnCall(out int pid);

    /// <summary>
    /// Makes a spawn call and, when it started a child, gives the child's exit its waiter; returns the call's result.
    /// Not under the lock: the call suspends the calling thread until the child has exec'd, and spawns on several
    /// threads overlap. While a spawn has no waiter yet, exits nobody claims are kept however old (see Reap): a
    /// spawning thread descheduled past UnclaimedFor would otherwise find its child's exit dropped and wait for ever.
    /// </summary>
    private int? Spawn(SpawnCall call, TaskCompletionSource<ExitStatus> exited, out int pid)
    {
        lock (_lock) _spawning++;
        try
        {
            var rc = call(out pid);
            if (rc == 0)
                lock (_lock)
                {
                    if (_unclaimed.Remove(pid, out var early)) exited.TrySetResult(early.Status); // it already exited
                    else _waiters[pid] = exited;
                }
            return rc;
        }
        finally
        {
            lock (_lock) _spawning--;
        }
    }

    /// <summary>Native UTF-8 copies of a spawn's strings and arrays, freed together.</summary>
    private sealed class NativeStrings : IDisposable
    {
        private readonly List<nint> _allocations = [];

        public byte* Utf8(string s)
        {
            var p = Marshal.StringToCoTaskMemUTF8(s);
            _allocations.Add(p);
            return (byte*)p;
        }

        /// <summary>A NULL-terminated array of strings (argv, envp).</summary>
        public byte** Array(IReadOnlyList<string> items)
        {
            var p = (byte**)Marshal.AllocCoTaskMem((items.Count + 1) * sizeof(nint));
            _allocations.Add((nint)p);
            for (var i = 0; i < items.Count; i++) p[i] = Utf8(items[i]);
            p[items.Count] = null;
            return p;
        }

        /// <summary>An environment as envp: NAME=value strings.</summary>
        public byte** Environment(IReadOnlyDictionary<string, string> environment) =>
            Array([.. environment.Select(kv => $"{kv.Key}={kv.Value}")]);

        public void Dispose()
        {
            foreach (var p in _allocations) Marshal.FreeCoTaskMem(p);
            _allocations.Clear();
        }
    }

    /// <summary>The fd the gate waits on in the child.</summary>
    private const int GateFd = 3;

    /// <summary>Reads one line from the gate fd (EOF: the placement failed, exit 125), closes it and execs the program
    /// ($0) with its arguments. dash sets PWD when it is not in the environment: unset again, the program gets exactly
    /// the environment asked for.</summary>
    private static string GateScript(bool keepPwd) =>
        (keepPwd ? "" : "unset PWD; ") + "IFS= read -r _ <&3 || exit 125; exec 3<&-; exec \"$0\" \"$@\"";

    /// <summary>Moves the gated child into its cgroup; if it cannot be moved, it is killed unrun.</summary>
    private static void Place(int pid, string cgroup, int[] gate)
    {
        Native.close(gate[0]);
        gate[0] = -1;
        try
        {
            Cgroup.Add(cgroup, pid);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Native.kill(pid, Native.SIGKILL);
            throw new SpawnException(5 /* EIO */, $"cannot place the new process in cgroup {cgroup}: {e.Message}");
        }
    }

    /// <summary>
    /// Runs <paramref name="hook"/> on the reaper's own thread the moment child <paramref name="pid"/> is reaped, before
    /// its <see cref="SpawnedProcess.Exited"/> completes (whose continuations run on the thread pool): for what must
    /// follow an exit within microseconds, such as releasing an armed successor. The hook must be short and must not
    /// block; it replaces an earlier one of the pid, null removes it, and it runs at most once. A pid that is not a
    /// child of this process never runs its hook.
    /// </summary>
    public void OnExit(int pid, Action<ExitStatus>? hook)
    {
        lock (_lock)
        {
            if (hook is null) _exitHooks.Remove(pid);
            else _exitHooks[pid] = hook;
        }
    }

    /// <summary>Opens the gate: the child execs its program.</summary>
    internal static void Release(int pid, int gate)
    {
        var line = (byte)'\n';
        if (Native.write(gate, &line, 1) != 1)
        {
            var errno = Marshal.GetLastPInvokeError();
            Native.kill(pid, Native.SIGKILL);
            throw new SpawnException(errno, $"cannot release the new process: {Native.Error(errno)}");
        }
    }

    private delegate byte* Utf8Func(string s);

    private static void AddStdio(void* actions, int fd, StdioTarget target, int[] pipe, Utf8Func utf8)
    {
        switch (target)
        {
            case StdioTarget.FileTarget file:
                Check(Native.posix_spawn_file_actions_addopen(actions, fd, utf8(file.Path), Native.O_WRONLY | Native.O_CREAT | Native.O_APPEND, 0x1A4 /* 0644 */), "stdio file");
                break;
            case StdioTarget.PipeTarget:
                MakePipe(pipe);
                Check(Native.posix_spawn_file_actions_adddup2(actions, pipe[1], fd), "stdio pipe");
                break;
        }
    }

    private static Stream? ReadEnd(int[] pipe)
    {
        if (pipe[0] < 0) return null;
        var handle = new SafeFileHandle(pipe[0], ownsHandle: true);
        pipe[0] = -1;
        return new FileStream(handle, FileAccess.Read, bufferSize: 0);
    }

    private static Stream? WriteEnd(int[] pipe)
    {
        if (pipe[1] < 0) return null;
        var handle = new SafeFileHandle(pipe[1], ownsHandle: true);
        pipe[1] = -1;
        return new FileStream(handle, FileAccess.Write, bufferSize: 0);
    }

    /// <summary>A spawn's pipes (each end -1 until made): the child gets stdin's read end and the others' write ends,
    /// the parent keeps the rest as the process's streams.</summary>
    private sealed class StdioPipes
    {
        public readonly int[] Stdin = [-1, -1];
        public readonly int[] Stdout = [-1, -1];
        public readonly int[] Stderr = [-1, -1];

        /// <summary>The spawn failed: every end goes.</summary>
        public void CloseAll()
        {
            CloseBoth(Stdin);
            CloseBoth(Stdout);
            CloseBoth(Stderr);
        }

        /// <summary>The parent's copies of the ends only the child uses.</summary>
        public void CloseChildEnds()
        {
            foreach (var (pipe, end) in new[] { (Stdin, 0), (Stdout, 1), (Stderr, 1) })
            {
                if (pipe[end] >= 0) Native.close(pipe[end]);
                pipe[end] = -1;
            }
        }

        /// <summary>The started process, with the parent's ends as its streams (they are its now).</summary>
        public SpawnedProcess Process(int pid, Task<ExitStatus> exited)
        {
            var identity = ProcFs.ReadStat(pid) is { } stat ? new ProcessIdentity(pid, stat.StartTime) : new ProcessIdentity(pid, 0);
            return new SpawnedProcess(identity, exited, ReadEnd(Stdout), ReadEnd(Stderr), WriteEnd(Stdin));
        }
    }

    /// <summary>A close-on-exec pipe, its two ends put in <paramref name="pipe"/>.</summary>
    private static void MakePipe(int[] pipe)
    {
        fixed (int* fds = pipe)
        {
            if (Native.pipe2(fds, Native.O_CLOEXEC) != 0) throw new SpawnException(Marshal.GetLastPInvokeError(), "pipe2 failed");
        }
    }

    private static void CloseBoth(int[] pipe)
    {
        foreach (var i in new[] { 0, 1 })
        {
            if (pipe[i] >= 0) Native.close(pipe[i]);
            pipe[i] = -1;
        }
    }

    private static void Check(int rc, string what)
    {
        if (rc != 0) throw new SpawnException(rc, $"{what} failed: {Native.Error(rc)}");
    }

    /// <summary>An executable path: as given when it has a '/', else the first match on PATH.</summary>
    public static string Resolve(string executable, IReadOnlyDictionary<string, string>? environment = null)
    {
        if (executable.Contains('/')) return executable;
        var path = environment?.GetValueOrDefault("PATH") ?? System.Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/bin:/usr/bin:/bin";
        foreach (var dir in path.Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, executable);
            if (System.IO.File.Exists(candidate)) return candidate;
        }
        throw new SpawnException(Native.ENOENT, $"'{executable}' was not found on PATH");
    }

    private void Reap()
    {
        var info = default(Native.SigInfo);
        while (!_stopping)
        {
            info = default;
            var rc = Native.waitid(Native.P_ALL, 0, &info, Native.WEXITED);
            if (rc != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == Native.ECHILD) _childAdded.WaitOne(); // no children: sleep until one is started
                continue; // EINTR
            }

            var status = info.Code switch
            {
                Native.CLD_EXITED => new ExitStatus(info.Status, null),
                Native.CLD_KILLED or Native.CLD_DUMPED => new ExitStatus(null, info.Status),
                _ => ExitStatus.Unknown,
            };
            TaskCompletionSource<ExitStatus>? waiter;
            Action<ExitStatus>? hook;
            lock (_lock)
            {
                _exitHooks.Remove(info.Pid, out hook);
                if (!_waiters.Remove(info.Pid, out waiter))
                {
                    var now = System.Diagnostics.Stopwatch.GetTimestamp();
                    if (_spawning == 0)
                        foreach (var old in _unclaimed.Where(u => System.Diagnostics.Stopwatch.GetElapsedTime(u.Value.At, now) > UnclaimedFor).Select(u => u.Key).ToList())
                            _unclaimed.Remove(old);
                    _unclaimed[info.Pid] = (status, now);
                }
            }
            try
            {
                hook?.Invoke(status);
            }
            catch
            {
                // A hook's failure must not stop the reaper.
            }
            waiter?.TrySetResult(status);
            try
            {
                Reaped?.Invoke(info.Pid, status);
            }
            catch
            {
                // A subscriber's failure must not stop the reaper.
            }
        }
    }

    /// <summary>
    /// Stops the reaper thread. Children keep running (a launcher's children outlive it by design); their exits are
    /// no longer reported.
    /// </summary>
    public void Dispose()
    {
        if (_disposed) return;
        _stopping = true;
        _childAdded.Set();
        // A thread blocked in waitid with children alive wakes with the next exit: start one that exits at once.
        try
        {
            if (_thread.IsAlive && Running > 0) Spawn(new SpawnRequest("/bin/true", [], new Dictionary<string, string>()));
        }
        catch (SpawnException)
        {
        }
        _disposed = true;
        _thread.Join(TimeSpan.FromSeconds(2));
        _childAdded.Dispose();
        lock (_lock)
        {
            foreach (var waiter in _waiters.Values) waiter.TrySetCanceled();
            _waiters.Clear();
        }
    }
}

/// <summary>A child held at its gate, in its cgroup, before its program runs (<see cref="ChildReaper.SpawnHeld"/>).
/// Released once, or aborted (killed unrun); if its holder dies, the gate sees end-of-file and the child exits.</summary>
public sealed class HeldProcess(SpawnedProcess process, int gate)
{
    private int _gate = gate;
    private volatile bool _releasedEarly;
    private volatile Exception? _earlyFailure;
    private int _takenUp; // 1 once an early release was returned by Release or killed by Abort

    /// <summary>Let run by <see cref="ReleaseEarly"/>: its program may have started (and forked) already.</summary>
    public bool ReleasedEarly => _releasedEarly;

    /// <summary>Lets the program run (under the pid it already has) and returns it; after a <see cref="ReleaseEarly"/>,
    /// returns it (or throws what that release met).</summary>
    public SpawnedProcess Release()
    {
        var fd = Interlocked.Exchange(ref _gate, -1);
        if (fd < 0)
        {
            if (_earlyFailure is { } failure) throw failure;
            return _releasedEarly && Interlocked.Exchange(ref _takenUp, 1) == 0 ? process
                : throw new InvalidOperationException("the process was released or aborted already");
        }
        Open(fd);
        return process;
    }

    /// <summary>Writes the gate's line and closes it (<see cref="ChildReaper.Release"/> kills the child if it cannot).</summary>
    private void Open(int fd)
    {
        try
        {
            ChildReaper.Release(process.Pid, fd);
        }
        finally
        {
            Native.close(fd);
        }
    }

    /// <summary>
    /// Lets the program run now, from wherever the caller is (say a <see cref="ChildReaper.OnExit"/> hook), and never
    /// throws: the <see cref="Release"/> that follows returns the process, or throws what this release met. Does
    /// nothing once released or aborted.
    /// </summary>
    public void ReleaseEarly()
    {
        var fd = Interlocked.Exchange(ref _gate, -1);
        if (fd < 0) return;
        _releasedEarly = true;
        try
        {
            Open(fd);
        }
        catch (SpawnException e)
        {
            _earlyFailure = e;
        }
    }

    /// <summary>Kills it unrun (or, after a <see cref="ReleaseEarly"/> that nothing took up with <see cref="Release"/>,
    /// running); <see cref="SpawnedProcess.Exited"/> says when it is gone.</summary>
    public Task Abort()
    {
        var fd = Interlocked.Exchange(ref _gate, -1);
        if (fd >= 0)
        {
            ProcessTree.Signal(process.Identity, ProcessTree.SIGKILL);
            Native.close(fd);
        }
        else if (_releasedEarly && Interlocked.Exchange(ref _takenUp, 1) == 0)
        {
            ProcessTree.Signal(process.Identity, ProcessTree.SIGKILL);
        }
        return process.Exited;
    }
}
