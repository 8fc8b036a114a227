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
        var (_, launcher) = await FindAsync(c, id, "");
        var stopped = await c.Ask("launcher", () => launcher.StopInstanceAsync(request, deadline: c.Deadline + (grace ?? TimeSpan.Zero)).ResponseAsync);
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
        var (id, node) = IsInstanceId(target) ? (target, "") : await InstanceOfAsync(c, target, previous);
        var (_, launcher) = await FindAsync(c, id, node);
        var request = new StreamLogsRequest { Id = id, Follow = follow, TailLines = tail < 0 ? int.MaxValue : tail };
        try
        {
            using var call = launcher.StreamLogs(request, cancellationToken: c.Cancellation);
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

    /// <summary>The instance and the launcher that holds it: the node named first (a workload's node), then every
    /// launcher. NOT_FOUND when none knows it.</summary>
    public static async Task<(Instance Instance, Launcher.V1.Launcher.LauncherClient Launcher)> FindAsync(Context c, string id, string node)
    {
        var launchers = await c.Platform.LaunchersAsync(c.Deadline, c.Cancellation);
        if (launchers.Count == 1)
        {
            var only = launchers[0].Client;
            return (await c.Ask("launcher", () => only.GetInstanceAsync(new GetInstanceRequest { Id = id }, deadline: c.Deadline).ResponseAsync), only);
        }
        foreach (var (_, launcher) in launchers.OrderBy(l => l.Node == node ? 0 : 1))
        {
            try
            {
                return (await launcher.GetInstanceAsync(new GetInstanceRequest { Id = id }, deadline: c.Deadline, cancellationToken: c.Cancellation), launcher);
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unavailable or StatusCode.DeadlineExceeded)
            {
                // Not on this node (or the node does not answer): the next one.
            }
        }
        throw new CliException(ExitCode.NotFound, $"instance '{id}' was not found on any node ({string.Join(", ", launchers.Select(l => l.Node))})");
    }

    private static async Task<(string Id, string Node)> InstanceOfAsync(Context c, string workload, bool previous)
    {
        var w = await c.Ask("supervisor", () => c.Platform.Supervisor.GetWorkloadAsync(new GetWorkloadRequest { Name = workload }, deadline: c.Deadline).ResponseAsync);
        if (!previous && w.Status.InstanceId.Length > 0) return (w.Status.InstanceId, w.Status.Node);
        // The instances the launchers still know, newest first: the one before the current (previous), or the last one
        // (a workload between instances: backing off, stopped).
        var instances = new List<Instance>();
        foreach (var (_, launcher) in await c.Platform.LaunchersAsync(c.Deadline, c.Cancellation))
            instances.AddRange((await c.Ask("launcher", () => launcher.ListInstancesAsync(new ListInstancesRequest { Workload = workload, PageSize = 1000 }, deadline: c.Deadline).ResponseAsync)).Instances);
        var older = instances.Where(i => i.Id != w.Status.InstanceId && i.Labels.GetValueOrDefault("platform.supervisor/workload") == workload)
            .OrderByDescending(i => i.StartTime?.ToDateTimeOffset() ?? default).FirstOrDefault();
        return older is not null ? (older.Id, older.Node) : throw new CliException(ExitCode.NotFound, previous
            ? $"workload '{workload}' has no previous instance the launcher still keeps (exited instances are kept for a while, then forgotten)"
            : $"workload '{workload}' has no instance now ({Output.Name(Enums.Phase, (int)w.Status.Phase)}) and none before it that the launcher still keeps");
    }
}
