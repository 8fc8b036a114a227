namespace Platform.Supervisor;

/// <summary>
/// One acting Supervisor per store: an exclusive lock on <c>&lt;data&gt;/supervisor.lock</c>, held for the life of the
/// process. A second Supervisor started on the same data directory stands by (it serves health, says so, and changes
/// nothing) and takes the lock the moment the first one's process ends, however it ends: the kernel drops the lock
/// with the process. .NET takes the lock itself (FileShare.None is an exclusive <c>flock</c> on Linux), so no code of
/// ours locks anything; <c>DOTNET_SYSTEM_IO_DISABLEFILELOCKING</c> would turn it off and must not be set.
/// </summary>
public sealed class ActingLock(string path) : IDisposable
{
    private FileStream? _file;

    /// <summary>This process holds the lock.</summary>
    public bool Held => Volatile.Read(ref _file) is not null;

    public string Path { get; } = path;

    /// <summary>Takes the lock if it is free (or already ours); false while another process holds it.</summary>
    public bool TryAcquire()
    {
        if (Held) return true;
        try
        {
            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(Path))!);
            Volatile.Write(ref _file, new FileStream(Path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    public void Dispose() => Volatile.Read(ref _file)?.Dispose();
}
