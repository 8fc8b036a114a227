using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Platform.ProcessControl;

/// <summary>
/// Which of many directories had a file in them written since they were last looked at, from one inotify instance.
/// Each directory carries a one-shot watch (<c>IN_MODIFY | IN_ONESHOT</c>): the kernel queues one event at its first
/// write and then nothing more until the watch is armed again, so a directory nobody writes in costs nothing between
/// looks and a busy one costs one event per look, however much is written. Nothing blocks and no thread waits:
/// <see cref="Due"/> reads what the kernel queued (the descriptor is non-blocking) and answers which directories to
/// look at.
/// </summary>
/// <remarks>
/// .NET's FileSystemWatcher would raise an event for every write of a chatty child (it has no one-shot watch) and
/// runs a thread of its own; this is the same kernel facility at one event per look. Where inotify is missing or out
/// of watches (<c>fs.inotify.max_user_watches</c>) a directory is simply due at every look, as before.
/// </remarks>
public sealed class ModifiedDirectories : IDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, int> _watches = new(StringComparer.Ordinal); // armed: directory -> wd; -1: not watchable
    private readonly Dictionary<int, string> _directories = [];
    private readonly HashSet<string> _fired = new(StringComparer.Ordinal);
    private readonly byte[] _buffer = new byte[16 * 1024];
    private int _fd = -2; // -2: not opened yet; -1: inotify unavailable
    private bool _disposed;

    /// <summary>Of <paramref name="directories"/> (all that matter now), the ones to look at: those not seen before,
    /// those written in since their last look, and those that cannot be watched. Each is armed again before it is
    /// returned, so a write after this call is seen at the next, and one before it is the caller's look to find.
    /// Directories left out of the list are forgotten (their watches removed).</summary>
    public List<string> Due(IReadOnlyCollection<string> directories)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_fd == -2) _fd = Native.inotify_init1(Native.IN_NONBLOCK | Native.IN_CLOEXEC) is var fd and >= 0 ? fd : -1;
            var overflow = Drain();
            var wanted = directories as IReadOnlySet<string> ?? new HashSet<string>(directories, StringComparer.Ordinal);
            foreach (var (directory, wd) in _watches.Where(w => !wanted.Contains(w.Key)).ToList())
            {
                if (wd >= 0)
                {
                    Native.inotify_rm_watch(_fd, wd);
                    _directories.Remove(wd);
                }
                _watches.Remove(directory);
            }
            var due = new List<string>();
            foreach (var directory in directories)
            {
                var known = _watches.TryGetValue(directory, out var wd);
                if (known && wd >= 0 && !overflow && !_fired.Contains(directory)) continue;
                Arm(directory, known ? wd : -1);
                due.Add(directory);
            }
            _fired.Clear();
            return due;
        }
    }

    /// <summary>How many directories carry a watch now.</summary>
    public int Watched
    {
        get
        {
            lock (_lock) return _directories.Count;
        }
    }

    private void Arm(string directory, int old)
    {
        if (old >= 0) _directories.Remove(old);
        var wd = _fd >= 0 ? Native.inotify_add_watch(_fd, directory, Native.IN_MODIFY | Native.IN_ONESHOT | Native.IN_ONLYDIR) : -1;
        _watches[directory] = wd;
        if (wd >= 0) _directories[wd] = directory;
    }

    /// <summary>Reads every queued event; true when the queue overflowed (events were lost: everything is due).</summary>
    private unsafe bool Drain()
    {
        if (_fd < 0) return false;
        var overflow = false;
        while (true)
        {
            nint read;
            fixed (byte* buffer = _buffer) read = Native.read(_fd, buffer, (nuint)_buffer.Length);
            if (read < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == Native.EINTR) continue;
                return overflow || errno != Native.EAGAIN; // an unexpected error: look at everything rather than miss a write
            }
            if (read == 0) return overflow;
            // struct inotify_event { int wd; uint32_t mask; uint32_t cookie; uint32_t len; char name[len]; }
            for (var offset = 0; offset + 16 <= read;)
            {
                var wd = BinaryPrimitives.ReadInt32LittleEndian(_buffer.AsSpan(offset));
                var mask = BinaryPrimitives.ReadUInt32LittleEndian(_buffer.AsSpan(offset + 4));
                var length = BinaryPrimitives.ReadInt32LittleEndian(_buffer.AsSpan(offset + 12));
                offset += 16 + length;
                if ((mask & Native.IN_Q_OVERFLOW) != 0) overflow = true;
                // A one-shot watch is gone once it fired (IN_IGNORED follows): the directory is due, and armed again.
                else if ((mask & (Native.IN_MODIFY | Native.IN_IGNORED)) != 0 && _directories.Remove(wd, out var directory)) _fired.Add(directory);
            }
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            if (_fd >= 0) Native.close(_fd);
        }
    }
}
