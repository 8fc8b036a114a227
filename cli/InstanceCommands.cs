using Grpc.Core;
using Platform.Launcher.V1;
using Platform.Supervisor.V1;

namespace Platform.Cli;

/// <summary>launch, stop and logs: instances through the Launcher.</summary>
public static class InstanceCommands
{
    public static async Task<int> LaunchAsync(Context c, string? workload, string[] env, string[] command)
    {
        var process = new ProcessSpec { Executable = command[0], Args = { command[1..] } };
        foreach (var pair in env)
        {
            var equals = pair.IndexOf('=');
            if (equals <= 0) throw new CliException(ExitCode.Usage, $"--env {pair}: write NAME=VALUE");
            process.Env[pair[..equals]] = pair[(equals + 1)..];
        }
        var request = new LaunchRequest { Process = process, Workload = workload ?? "", RequestId = Guid.NewGuid().ToString("N") };
        var instance = await c.Ask("launcher", () => c.Platform.Launcher.LaunchAsync(request, deadline: c.Deadline).ResponseAsync);
        if (c.Format is Format.Json or Format.Yaml) c.Out.Message(instance, c.Format);
        else c.Out.Writer.WriteLine($"instance/{instance.Id} launched (workload {instance.Workload}, pid {instance.Pid})");
        return ExitCode.Ok;
    }

    public static async Task<int> StopAsync(Context c, string id, TimeSpan? grace)
    {
        var request = new StopInstanceRequest { Id = id };
        if (grace is { } g) request.Grace = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(g);
        var stopped = await c.Ask("launcher", () => c.Platform.Launcher.StopInstanceAsync(request, deadline: c.Deadline + (grace ?? TimeSpan.Zero)).ResponseAsync);
        if (c.Format is Format.Json or Format.Yaml) c.Out.Message(stopped, c.Format);
        else
        {
            var how = stopped.HasExitCode ? $"exit code {stopped.ExitCode}" : stopped.HasSignal ? $"signal {stopped.Signal}" : "stopped";
            c.Out.Writer.WriteLine($"instance/{stopped.Id} stopped ({how})");
        }
        if (stopped.Labels.ContainsKey("platform.supervisor/workload"))
            Console.Error.WriteLine($"platformctl: note: instance {stopped.Id} belongs to supervised workload '{stopped.Workload}'; the supervisor starts it again as its policy says (platformctl delete workload {stopped.Workload} to stop it for good)");
        return ExitCode.Ok;
    }

    /// <summary>A workload's current instance (or, with previous, the one before it), or an instance by id.</summary>
    public static async Task<int> LogsAsync(Context c, string target, bool follow, int tail, bool previous)
    {
        var id = IsInstanceId(target) ? target : await InstanceOfAsync(c, target, previous);
        var request = new StreamLogsRequest { Id = id, Follow = follow, TailLines = tail < 0 ? int.MaxValue : tail };
        try
        {
            using var call = c.Platform.Launcher.StreamLogs(request, cancellationToken: c.Cancellation);
            await foreach (var entry in call.ResponseStream.ReadAllAsync(c.Cancellation))
            {
                if (entry.Stream == LogEntry.Types.Stream.Stderr && c.Out.Colour) c.Out.Writer.WriteLine($"\u001b[31m{entry.Text}\u001b[0m");
                else c.Out.Writer.WriteLine(entry.Text);
                if (follow) await c.Out.Writer.FlushAsync(c.Cancellation);
            }
        }
        catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled || !c.Cancellation.IsCancellationRequested)
        {
            var (code, message) = Failures.Describe(e, "launcher", c.Platform);
            throw new CliException(code, message);
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException && c.Cancellation.IsCancellationRequested)
        {
        }
        return ExitCode.Ok;
    }

    private static bool IsInstanceId(string text) => text.Length == 26 && text.All(ch => char.IsAsciiDigit(ch) || (ch is >= 'A' and <= 'Z' && ch is not ('I' or 'L' or 'O' or 'U')));

    private static async Task<string> InstanceOfAsync(Context c, string workload, bool previous)
    {
        var w = await c.Ask("supervisor", () => c.Platform.Supervisor.GetWorkloadAsync(new GetWorkloadRequest { Name = workload }, deadline: c.Deadline).ResponseAsync);
        if (!previous && w.Status.InstanceId.Length > 0) return w.Status.InstanceId;
        // The instances the launcher still knows, newest first: the one before the current (previous), or the last one
        // (a workload between instances: backing off, stopped).
        var instances = await c.Ask("launcher", () => c.Platform.Launcher.ListInstancesAsync(new ListInstancesRequest { Workload = workload, PageSize = 1000 }, deadline: c.Deadline).ResponseAsync);
        var older = instances.Instances.Where(i => i.Id != w.Status.InstanceId && i.Labels.GetValueOrDefault("platform.supervisor/workload") == workload)
            .OrderByDescending(i => i.StartTime?.ToDateTimeOffset() ?? default).FirstOrDefault();
        return older?.Id ?? throw new CliException(ExitCode.NotFound, previous
            ? $"workload '{workload}' has no previous instance the launcher still keeps (exited instances are kept for a while, then forgotten)"
            : $"workload '{workload}' has no instance now ({Output.Name(Enums.Phase, (int)w.Status.Phase)}) and none before it that the launcher still keeps");
    }
}
