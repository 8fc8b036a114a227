using System.Runtime.InteropServices;

namespace Platform.ProcessControl;

/// <summary>
/// Reports the exit of processes that are not our children (re-adopted after a restart of the launcher), the moment
/// it happens: one thread waits in epoll on a pidfd per process. Only a real parent can read an exit status, so
/// these exits complete with <see cref="ExitStatus.Unknown"/> (or the status the reaper saw, if the process was
/// reparented to us in the meantime).
/// </summary>
public sealed unsafe class PidfdMonitor : IDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<int, (ProcessIdentity Process, TaskCompletionSource<ExitStatus> Exit)> _watched = [];
    private readonly int _epoll;
    private readonly int _wake;
    private readonly Thread _thread;
    private volatile bool _stopping;

    public PidfdMonitor()
    {
        _epoll = Native.epoll_create1(Native.O_CLOEXEC);
        if (_epoll < 0) throw new InvalidOperationException($"epoll_create1 failed: {Native.Error(Marshal.GetLastPInvokeError())}");
        _wake = Native.eventfd(0, Native.EFD_CLOEXEC);
        var ev = new Native.EpollEvent { Events = Native.EPOLLIN, Data = ulong.MaxValue };
        Native.epoll_ctl(_epoll, Native.EPOLL_CTL_ADD, _wake, &ev);
        _thread = new Thread(Run) { IsBackground = true, Name = "pidfd monitor" };
        _thread.Start();
    }

    public int Count
    {
        get { lock (_lock) return _watched.Count; }
    }

    /// <summary>Completes when the process exits; at once if it is already gone (or the pid is someone else's now).</summary>
    public Task<ExitStatus> WatchAsync(ProcessIdentity process)
    {
        var fd = Native.PidfdOpen(process.Pid);
        if (fd < 0) return Task.FromResult(ExitStatus.Unknown); // ESRCH: gone
        // The pid may have been reused between the caller's check and pidfd_open: the pidfd now pins whichever
        // process has the pid, so check that it is still the same one.
        if (!ProcFs.IsAlive(process))
        {
            Native.close(fd);
            return Task.FromResult(ExitStatus.Unknown);
        }

        var exit = new TaskCompletionSource<ExitStatus>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock) _watched[fd] = (process, exit);
        var ev = new Native.EpollEvent { Events = Native.EPOLLIN, Data = (ulong)fd };
        if (Native.epoll_ctl(_epoll, Native.EPOLL_CTL_ADD, fd, &ev) != 0)
        {
            lock (_lock) _watched.Remove(fd);
            Native.close(fd);
            throw new InvalidOperationException($"epoll_ctl failed: {Native.Error(Marshal.GetLastPInvokeError())}");
        }
        return exit.Task;
    }

    private void Run()
    {
        const int max = 64;
        var events = stackalloc Native.EpollEvent[max];
        while (!_stopping)
        {
            var n = Native.epoll_wait(_epoll, events, max, -1);
            for (var i = 0; i < n; i++)
            {
                if (events[i].Data == ulong.MaxValue) continue; // the wake-up eventfd
                var fd = (int)events[i].Data;
                (ProcessIdentity Process, TaskCompletionSource<ExitStatus> Exit) watched;
                lock (_lock)
                {
                    if (!_watched.Remove(fd, out watched)) continue;
                }
                Native.epoll_ctl(_epoll, Native.EPOLL_CTL_DEL, fd, null);
                Native.close(fd);
                watched.Exit.TrySetResult(ExitStatus.Unknown);
            }
        }
    }

    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        ulong one = 1;
        Native.write(_wake, &one, sizeof(ulong));
        _thread.Join(TimeSpan.FromSeconds(2));
        lock (_lock)
        {
            foreach (var (fd, watched) in _watched)
            {
                Native.close(fd);
                watched.Exit.TrySetCanceled();
            }
            _watched.Clear();
        }
        Native.close(_wake);
        Native.close(_epoll);
    }
}
