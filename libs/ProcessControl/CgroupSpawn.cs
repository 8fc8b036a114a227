using System.Runtime.InteropServices;

namespace Platform.ProcessControl;

/// <summary>
/// Starts a program directly inside its cgroup with clone3(CLONE_INTO_CGROUP), through the small native library the
/// build makes of native/platform_spawn.c (with gcc; glibc's posix_spawn cannot place a child in a cgroup). A launch
/// then costs one exec instead of two and a shell: the gate (/bin/sh waiting until it has been moved) is needed only
/// where the library is missing, where the kernel refuses (then it is not tried again) and for held processes, which
/// must not run before they are released.
/// </summary>
internal static unsafe class CgroupSpawn
{
    private const string Library = "libplatformspawn.so";
    private const int ENOSYS = 38;
    private const int EINVAL = 22;
    private const int E2BIG = 7;
    private const int EOPNOTSUPP = 95;

    private static readonly delegate* unmanaged<byte*, byte**, byte**, int, int*, byte*, int*, int> Spawn = Load();
    private static volatile bool _refused;

    /// <summary>The library is there and the kernel has not refused it.</summary>
    public static bool Available => Spawn is not null && !_refused;

    /// <summary>Why the direct path is not taken, or null when it is.</summary>
    public static string? Unavailable => Spawn is null ? $"{Library} is not beside the application (it is built with gcc)"
        : _refused ? "the kernel refused clone3 with CLONE_INTO_CGROUP" : null;

    private static delegate* unmanaged<byte*, byte**, byte**, int, int*, byte*, int*, int> Load()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return null;
        return NativeLibrary.TryLoad(Path.Combine(AppContext.BaseDirectory, Library), out var handle) &&
            NativeLibrary.TryGetExport(handle, "platform_spawn", out var export)
            ? (delegate* unmanaged<byte*, byte**, byte**, int, int*, byte*, int*, int>)export
            : null;
    }

    /// <summary>Starts <paramref name="path"/> in the cgroup open as <paramref name="cgroupFd"/>, in a new session, with
    /// <paramref name="stdio"/> as its descriptors 0-2 and default signal dispositions. Returns 0 with the pid, or the
    /// errno of a program that could not be started; null when clone3 failed and nothing was started: the caller then
    /// takes the gate, whose move into the group says what is wrong with it (EBUSY, EACCES). A kernel without
    /// clone3's cgroup placement is not asked again.</summary>
    public static int? TryStart(byte* path, byte** argv, byte** envp, int cgroupFd, int* stdio, byte* cwd, out int pid)
    {
        int child;
        var rc = Spawn(path, argv, envp, cgroupFd, stdio, cwd, &child);
        pid = rc == 0 ? child : 0;
        if (rc >= 0) return rc;
        if (-rc is ENOSYS or EINVAL or E2BIG or EOPNOTSUPP) _refused = true;
        return null;
    }
}
