using Microsoft.Extensions.Options;

namespace Platform.Launcher;

/// <summary>
/// Keeps each running instance's output files under <see cref="LauncherOptions.MaxLogBytes"/>: a file past the size
/// is copied to <c>.1</c> (the previous <c>.1</c> is dropped) and truncated in place. The child keeps its descriptor
/// (opened with O_APPEND, so its next write lands at the new end): nothing about the child changes, which is why
/// this is copy-and-truncate rather than rename. Lines written between the copy and the truncation are lost, as with
/// logrotate's copytruncate.
/// </summary>
public sealed class LogRotator(InstanceManager instances, IOptions<LauncherOptions> options, TimeProvider time, ILogger<LogRotator> logger) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(5);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                RotateAll();
                // The same timer forgets exited instances past their retention (no timer of their own to wake).
                instances.ForgetExpired();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Rotates every running instance's output that is over the limit; returns how many files were rotated.</summary>
    public int RotateAll()
    {
        var rotated = 0;
        foreach (var directory in instances.RunningOutputDirectories())
        {
            foreach (var name in new[] { "stdout.log", "stderr.log" })
            {
                var path = Path.Combine(directory, name);
                try
                {
                    var info = new FileInfo(path); // one stat: Exists reads it, Length reuses it
                    if (!info.Exists || info.Length <= options.Value.MaxLogBytes) continue;
                    File.Copy(path, path + ".1", overwrite: true);
                    using (var file = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite)) file.SetLength(0);
                    rotated++;
                }
                catch (IOException e)
                {
                    logger.LogWarning("Could not rotate {Path}: {Error}", path, e.Message);
                }
            }
        }
        return rotated;
    }
}
