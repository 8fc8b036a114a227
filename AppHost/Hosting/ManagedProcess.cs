using System.Collections;
using Platform.ProcessControl;

namespace Platform.AppHost.Hosting;

/// <summary>
/// One started process of a resource, on the platform's process-control library: spawned in a session of its own,
/// its exit seen by the reaper at once, its output read from pipes, and a stop that leaves nothing of its tree behind
/// (SIGTERM to every descendant, a grace, SIGKILL to every survivor, then a check).
/// </summary>
public sealed class ManagedProcess
{
    private readonly SpawnedProcess _process;

    private ManagedProcess(SpawnedProcess process)
    {
        _process = process;
        StartedAt = DateTimeOffset.UtcNow;
        Exited = _process.Exited;
    }

    public ProcessIdentity Identity => _process.Identity;

    public int Pid => _process.Pid;

    public DateTimeOffset StartedAt { get; }

    /// <summary>Completes with the exit status when the main process exits.</summary>
    public Task<ExitStatus> Exited { get; }

    /// <summary>Starts the process with the AppHost's environment plus <paramref name="environment"/>; <paramref name="onOutput"/> gets each line (stderr: true).</summary>
    public static ManagedProcess Start(ProcessLaunch launch, IReadOnlyDictionary<string, string> environment, Action<string, bool> onOutput)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in Environment.GetEnvironmentVariables()) env[(string)entry.Key] = (string?)entry.Value ?? "";
        foreach (var (key, value) in environment) env[key] = value;

        SpawnedProcess process;
        try
        {
            process = ChildReaper.Shared.Spawn(new SpawnRequest(launch.FileName, launch.Arguments, env, launch.WorkingDirectory, StdioTarget.Pipe, StdioTarget.Pipe));
        }
        catch (SpawnException e)
        {
            throw new ResourceLaunchException(e.Message);
        }

        Pump(process.StandardOutput!, line => onOutput(line, false));
        Pump(process.StandardError!, line => onOutput(line, true));
        return new ManagedProcess(process);
    }

    /// <summary>Reads lines on a thread of its own until the pipe closes (the process and its children are gone).</summary>
    private static void Pump(Stream stream, Action<string> onLine) =>
        new Thread(() =>
        {
            using var reader = new StreamReader(stream);
            while (reader.ReadLine() is { } line) onLine(line);
        }) { IsBackground = true, Name = "resource output" }.Start();

    /// <summary>Stops the whole tree within <paramref name="grace"/>; returns how many processes had to be killed.</summary>
    public async Task<int> StopAsync(TimeSpan grace)
    {
        var result = await ProcessTree.StopAsync(Identity, grace);
        await Exited.WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { }, TaskScheduler.Default);
        return result.Killed;
    }

    /// <summary>An exit as a number, shell style: the code, or 128 + the signal.</summary>
    public static int ToExitCode(ExitStatus status) => status.Code ?? (status.Signal is { } signal ? 128 + signal : -1);
}
