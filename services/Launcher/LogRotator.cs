using Microsoft.Extensions.Options;
using Platform.ProcessControl;

namespace Platform.Launcher;

/// <summary>
/// Keeps each running instance's output files under <see cref="LauncherOptions.MaxLogBytes"/>: a file past the size
/// is copied to <c>.1</c> (the previous <c>.1</c> is dropped) and truncated in place. The child keeps its descriptor
/// (opened with O_APPEND, so its next write lands at the new end): nothing about the child changes, which is why
/// this is copy-and-truncate rather than rename. Lines written between the copy and the truncation are lost, as with
/// logrotate's copytruncate.
/// <para>
/// The check costs in proportion to what was written, not to how many instances run: each instance's output
/// directory carries a one-shot inotify watch (<see cref="ModifiedDirectories"/>), and a pass looks only at the
/// files of the directories written in since their last look (and of new ones). With 300 quiet instances a pass is
/// one read of the inotify descriptor instead of 600 stat calls.
/// </para>
/// </summary>
public sealed class LogRotator(InstanceManager instances, IOptions<LauncherOptions> options, TimeProvider time, ILogger<LogRotator> logger) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(5);
    private readonly ModifiedDirectories _written = new();

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

    /// <summary>Rotates every running instance's output that is over the limit, looking only at the directories
    /// written in since their last look (or new): which ones it looked at, and how many files it rotated.</summary>
    public (List<string> Looked, int Rotated) RotateAll()
    {
        var rotated = 0;
        var due = _written.Due(instances.RunningOutputDirectories());
        foreach (var directory in due)
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
        return (due, rotated);
    }

    public override void Dispose()
    {
        base.Dispose();
        _written.Dispose();
    }
}
