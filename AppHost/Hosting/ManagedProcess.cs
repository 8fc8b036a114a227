using System.Diagnostics;

namespace Platform.AppHost.Hosting;

/// <summary>
/// One started process of a resource: its output, its exit, and a stop that leaves nothing of its tree behind
/// (SIGTERM to every descendant, a grace, SIGKILL to every survivor, then a check).
/// </summary>
public sealed class ManagedProcess : IAsyncDisposable
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(25);
    private readonly Process _process;

    private ManagedProcess(Process process, ProcessIdentity identity)
    {
        _process = process;
        Identity = identity;
        StartedAt = DateTimeOffset.UtcNow;
        Exited = WaitForExitAsync();
    }

    public ProcessIdentity Identity { get; }

    public int Pid => Identity.Pid;

    public DateTimeOffset StartedAt { get; }

    /// <summary>Completes with the exit code when the main process exits (128 + signal for a signal).</summary>
    public Task<int> Exited { get; }

    /// <summary>Starts the process; <paramref name="onOutput"/> gets each line (stderr: true).</summary>
    public static ManagedProcess Start(ProcessLaunch launch, IReadOnlyDictionary<string, string> environment, Action<string, bool> onOutput)
    {
        var info = new ProcessStartInfo(launch.FileName)
        {
            WorkingDirectory = launch.WorkingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in launch.Arguments) info.ArgumentList.Add(arg);
        foreach (var (key, value) in environment) info.Environment[key] = value;

        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) onOutput(e.Data, false); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) onOutput(e.Data, true); };
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            process.Dispose();
            throw new ResourceLaunchException($"cannot start {launch.FileName}: {e.Message}");
        }

        // Resources get no input: a closed stdin, never the terminal's.
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var identity = ProcessTree.Identify(process.Id) ?? new ProcessIdentity(process.Id, 0);
        return new ManagedProcess(process, identity);
    }

    private async Task<int> WaitForExitAsync()
    {
        await _process.WaitForExitAsync();
        return _process.ExitCode;
    }

    /// <summary>
    /// Stops the whole tree: SIGTERM to the process and every descendant, up to <paramref name="grace"/> for them to
    /// go, SIGKILL to whatever is left (including descendants started meanwhile), and a wait until none is alive.
    /// Returns the number of processes that had to be killed.
    /// </summary>
    public async Task<int> StopAsync(TimeSpan grace)
    {
        var tree = ProcessTree.Snapshot(Pid);
        ProcessTree.Signal(tree, ProcessTree.SIGTERM);

        var deadline = DateTimeOffset.UtcNow + grace;
        while (DateTimeOffset.UtcNow < deadline && tree.Any(ProcessTree.IsAlive))
            await Task.Delay(PollInterval);

        // Descendants may have been started during the grace: take them in too while the root still lives.
        var survivors = tree.Concat(ProcessTree.Snapshot(Pid)).Distinct().Where(ProcessTree.IsAlive).ToList();
        var killed = ProcessTree.Signal(survivors, ProcessTree.SIGKILL);

        var killDeadline = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(5);
        while (DateTimeOffset.UtcNow < killDeadline && survivors.Any(ProcessTree.IsAlive))
            await Task.Delay(PollInterval);
        await Exited.WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { }, TaskScheduler.Default);
        return killed;
    }

    public async ValueTask DisposeAsync()
    {
        if (!Exited.IsCompleted) await StopAsync(TimeSpan.Zero);
        _process.Dispose();
    }
}
