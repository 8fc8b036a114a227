using System.Runtime.InteropServices;

namespace Platform.ServiceDefaults;

/// <summary>
/// The C heap under the managed one. glibc's malloc keeps the pages of freed blocks in its arenas (the main heap and
/// one per thread that contended for it), so what SQLite, OpenSSL and the runtime itself allocated during a burst
/// stays resident after it is freed; <c>malloc_trim(0)</c> hands every wholly free page of every arena back to the
/// kernel (measured on an idle Supervisor after a start of 300: 2.5-3 MiB of its RSS). A C library without it (musl)
/// makes this a no-op.
/// </summary>
public static class NativeHeap
{
    private static bool _unavailable = !OperatingSystem.IsLinux();

    /// <summary>Gives the C heap's free pages back to the kernel; true when the C library did (or could) release some.</summary>
    public static bool Trim()
    {
        if (_unavailable) return false;
        try
        {
            return malloc_trim(0) != 0;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            _unavailable = true;
            return false;
        }
    }

    [DllImport("libc", ExactSpelling = true)]
    private static extern int malloc_trim(nuint pad);
}
