using System.Globalization;
using Platform.Manifests;
using Platform.Monitor.V1;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Cli;

/// <summary>apply, delete, restart and describe: workloads through the Supervisor.</summary>
public static class WorkloadCommands
{
    public static async Task<int> ApplyAsync(Context c, string[] files, TextReader stdin)
    {
        var workloads = new List<Workload>();
        foreach (var file in files)
        {
            string text;
            try { text = file == "-" ? await stdin.ReadToEndAsync(c.Cancellation) : await File.ReadAllTextAsync(file, c.Cancellation); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new CliException(ExitCode.Failed, $"cannot read {file}: {e.Message}");
            }
            try { workloads.AddRange(Manifest.Read(text, file == "-" ? "stdin" : file)); }
            catch (ManifestException e) { throw new CliException(ExitCode.Failed, e.Message); }
        }
        // One ApplyWorkloads call per 1,000 workloads: the Supervisor applies them all at once. Like kubectl, a workload
        // that is refused does not stop the others; the command fails at the end.
        var failed = 0;
        var applied = new List<Workload>();
        foreach (var chunk in workloads.Chunk(1000))
        {
            var response = await c.Ask("supervisor", () => c.Platform.Supervisor.ApplyWorkloadsAsync(new ApplyWorkloadsRequest { Workloads = { chunk } }, deadline: c.Deadline).ResponseAsync);
            foreach (var result in response.Results)
            {
                if (result.Code != 0)
                {
                    var (_, message) = Failures.Describe(new Grpc.Core.RpcException(new Grpc.Core.Status((Grpc.Core.StatusCode)result.Code, result.Message)), "supervisor", c.Platform);
                    Console.Error.WriteLine($"platformctl: workload/{result.Name}: {message}");
                    failed++;
                    continue;
                }
                applied.Add(result.Workload);
                if (c.Format is Format.Table or Format.Wide)
                    c.Out.Writer.WriteLine($"workload/{result.Name} {result.Change switch { ApplyResult.Types.Change.Created => "created", ApplyResult.Types.Change.Unchanged => "unchanged", _ => "configured" }}");
            }
        }
        if (c.Format is Format.Json or Format.Yaml) c.Out.Message(new ListWorkloadsResponse { Workloads = { applied } }, c.Format);
        return failed == 0 ? ExitCode.Ok : ExitCode.Failed;
    }

    public static async Task<int> DeleteAsync(Context c, string name)
    {
        await c.Ask("supervisor", () => c.Platform.Supervisor.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = name }, deadline: c.Deadline).ResponseAsync);
        c.Out.Writer.WriteLine($"workload/{name} deleted");
        return ExitCode.Ok;
    }

    public static async Task<int> RestartAsync(Context c, string name)
    {
        var w = await c.Ask("supervisor", () => c.Platform.Supervisor.RestartWorkloadAsync(new RestartWorkloadRequest { Name = name, Reason = "platformctl restart" }, deadline: c.Deadline).ResponseAsync);
        if (c.Format is Format.Json or Format.Yaml) c.Out.Message(w, c.Format);
        else c.Out.Writer.WriteLine($"workload/{name} restarted (generation {w.Status.Generation}, {Output.Name(Enums.Phase, (int)w.Status.Phase)})");
        return ExitCode.Ok;
    }

    public static async Task<int> DescribeAsync(Context c, string name)
    {
        var w = await c.Ask("supervisor", () => c.Platform.Supervisor.GetWorkloadAsync(new GetWorkloadRequest { Name = name }, deadline: c.Deadline).ResponseAsync);
        var history = await c.Ask("supervisor", () => c.Platform.Supervisor.ListWorkloadHistoryAsync(new ListWorkloadHistoryRequest { Name = name, PageSize = 20 }, deadline: c.Deadline).ResponseAsync);
        if (c.Format is Format.Json or Format.Yaml)
        {
            c.Out.Message(w, c.Format);
            return ExitCode.Ok;
        }
        // The monitor's verdicts: best effort, the description stands without them.
        List<AgentStatus>? verdicts = null;
        string? monitorError = null;
        try
        {
            verdicts = [.. (await c.Ask("monitor", () => c.Platform.Monitor.ListStatusesAsync(new ListStatusesRequest { Workload = name }, deadline: c.Deadline).ResponseAsync)).Statuses];
        }
        catch (CliException e)
        {
            monitorError = e.Message;
        }
        var now = DateTimeOffset.UtcNow;
        var s = w.Status;
        var fields = new List<(string, Cell)>
        {
            ("Name", w.Name),
            ("Labels", w.Labels.Count == 0 ? "-" : string.Join(",", w.Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}"))),
            ("Created", $"{Time(w.CreateTime)} ({Output.Age(w.CreateTime, now)} ago)"),
            ("Launch", Describe(w.Launch)),
        };
        var env = w.Launch.Env.Concat(w.Launch.Process?.Env ?? []).Select(e => $"{e.Key}={e.Value}").ToList();
        if (env.Count > 0) fields.Add(("Environment", string.Join(" ", env)));
        fields.Add(("Restart policy", Describe(w.RestartPolicy)));
        fields.Add(("Health", Describe(w.Health)));
        fields.Add(("Stop grace", w.StopGrace is null ? "3s (default)" : Duration(w.StopGrace)));
        if (w.Placement is { } p && (p.NodeSelector.Length > 0 || p.NodeName.Length > 0))
            fields.Add(("Placement", string.Join(", ", new[] { p.NodeName.Length > 0 ? $"node {p.NodeName}" : "", p.NodeSelector.Length > 0 ? $"nodes matching {p.NodeSelector}" : "" }.Where(x => x.Length > 0))));
        fields.Add(("Phase", Phases.Cell(s.Phase)));
        if (s.Node.Length > 0) fields.Add(("Node", s.Node));
        fields.Add(("Message", s.Message.Length == 0 ? "-" : s.Message));
        fields.Add(("Generation", s.Generation.ToString(CultureInfo.InvariantCulture)));
        fields.Add(("Instance", s.InstanceId.Length == 0 ? "-" : $"{s.InstanceId} (pid {s.Pid})"));
        fields.Add(("Restarts", $"{s.TotalRestarts} in all, {s.RestartCount} counted against the limit"));
        if (s.NextRestartTime is not null) fields.Add(("Next start", $"{Time(s.NextRestartTime)} ({Output.In(s.NextRestartTime, now)})"));
        fields.Add(("Last exit", s.LastExit is null ? "-" : Exit(s.LastExit, now)));
        fields.Add(("Trace id", s.TraceId.Length == 0 ? "-" : s.TraceId));
        c.Out.Fields(fields);
        c.Out.Writer.WriteLine();
        c.Out.Heading("Agent (the monitor's verdicts):");
        if (monitorError is not null) c.Out.Writer.WriteLine($"  ({monitorError})");
        else if (verdicts!.Count == 0) c.Out.Writer.WriteLine("  (no probes: the workload declares no health probe or heartbeat)");
        else
        {
            var rows = verdicts.Select(v => (IReadOnlyList<Cell>)[v.TargetId, Verdicts.Cell(v.State), Output.Age(v.LastProbeTime, now), v.Detail]);
            Indented(c, ["TARGET", "VERDICT", "PROBED", "DETAIL"], rows);
        }
        c.Out.Writer.WriteLine();
        c.Out.Heading($"History (newest first{(history.NextPageToken.Length > 0 ? ", the last 20" : "")}):");
        if (history.Entries.Count == 0) c.Out.Writer.WriteLine("  (none)");
        else Indented(c, ["TIME", "AGE", "GEN", "EVENT", "DETAIL"], history.Entries.Select(h => (IReadOnlyList<Cell>)
            [Time(h.Time), Output.Age(h.Time, now), h.Generation.ToString(CultureInfo.InvariantCulture), History(h.Event), h.Detail]));
        return ExitCode.Ok;
    }

    private static void Indented(Context c, string[] header, IEnumerable<IReadOnlyList<Cell>> rows)
    {
        var text = new StringWriter(CultureInfo.InvariantCulture);
        new Output(text, c.Out.Colour).Table(header, rows);
        foreach (var line in text.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)) c.Out.Writer.WriteLine("  " + line);
    }

    private static Cell History(string what) => what switch
    {
        "started" or "adopted" => new(what, "32"),
        "exited" or "launch-failed" => new(what, "31"),
        _ => new(what, "33"),
    };

    public static string Time(Google.Protobuf.WellKnownTypes.Timestamp? t) =>
        t is null ? "-" : t.ToDateTimeOffset().ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    public static string Duration(Google.Protobuf.WellKnownTypes.Duration d)
    {
        var t = d.ToTimeSpan();
        return t.TotalSeconds < 1 && t > TimeSpan.Zero ? $"{t.TotalMilliseconds:0}ms"
            : t.TotalMinutes < 2 ? $"{t.TotalSeconds:0.###}s"
            : t.TotalHours < 2 ? $"{t.TotalMinutes:0.#}m" : $"{t.TotalHours:0.#}h";
    }

    public static string Describe(Launcher.V1.LaunchSpec launch) => launch.SourceCase switch
    {
        Launcher.V1.LaunchSpec.SourceOneofCase.Template => $"template {launch.Template}",
        Launcher.V1.LaunchSpec.SourceOneofCase.Process => string.Join(" ", new[] { launch.Process.Executable }.Concat(launch.Process.Args).Select(Quote))
            + (launch.Process.WorkingDirectory.Length > 0 ? $"  (in {launch.Process.WorkingDirectory})" : ""),
        _ => "-",
    };

    /// <summary>A word as a shell would need it.</summary>
    public static string Quote(string word) =>
        word.Length > 0 && word.All(ch => char.IsAsciiLetterOrDigit(ch) || "-_./=:,@%+".Contains(ch)) ? word : $"'{word.Replace("'", "'\\''")}'";

    private static string Describe(RestartPolicy? p)
    {
        if (p is null) return "-";
        var mode = p.Mode switch { RestartPolicy.Types.Mode.OnFailure => "on-failure", RestartPolicy.Types.Mode.Never => "never", _ => "always" };
        if (p.Mode == RestartPolicy.Types.Mode.Never) return mode;
        return $"{mode}; backoff {Duration(p.InitialBackoff ?? new())} x{p.Multiplier:0.##} up to {Duration(p.MaxBackoff ?? new())}" +
            (p.Jitter > 0 ? $" (+{p.Jitter:0.##} jitter)" : "") +
            $"; at most {p.MaxRestarts} restarts in {Duration(p.RestartWindow ?? new())}, then a cool-off of {Duration(p.Cooloff ?? new())}; stable after {Duration(p.StableAfter ?? new())}";
    }

    private static string Describe(HealthPolicy? h)
    {
        if (h is null) return "heartbeat timeout 30s (the registry lease; default)";
        var parts = new List<string>();
        if (h.HeartbeatTimeout is { } timeout)
            parts.Add(timeout.ToTimeSpan() == TimeSpan.Zero ? "no heartbeat timeout" : $"heartbeat timeout {Duration(timeout)}{(h.HeartbeatFile.Length > 0 ? $" (file {h.HeartbeatFile})" : " (the registry lease)")}");
        if (h.Probe is { } probe) parts.Add($"probe {probe.ProbeCase.ToString().ToLowerInvariant()}" + (probe.Interval is { } i ? $" every {Duration(i)}" : ""));
        return parts.Count == 0 ? "-" : string.Join("; ", parts);
    }

    public static string Exit(ExitInfo e, DateTimeOffset now)
    {
        var how = e.HasExitCode ? $"code {e.ExitCode}" : e.HasSignal ? $"signal {e.Signal}" : "";
        return string.Join(", ", new[] { how, e.Reason, e.Time is null ? "" : $"{Output.Age(e.Time, now)} ago" }.Where(p => p.Length > 0));
    }
}

/// <summary>Phases and verdicts as cells, coloured by what they mean.</summary>
public static class Phases
{
    public static Cell Cell(Phase phase) => new(Output.Name(Enums.Phase, (int)phase), phase switch
    {
        Phase.Running => "32",
        Phase.BackingOff or Phase.CoolingOff or Phase.Pending => "33",
        Phase.Failed => "31",
        _ => "90",
    });
}

public static class Verdicts
{
    public static Cell Cell(AgentStatus.Types.State state) => new(Output.Name(Enums.Verdict, (int)state), state switch
    {
        AgentStatus.Types.State.Healthy => "32",
        AgentStatus.Types.State.Idle => "33",
        AgentStatus.Types.State.Unhealthy => "31",
        _ => "90",
    });
}

/// <summary>The contract's enum types (names as the contract spells them).</summary>
public static class Enums
{
    public static readonly Google.Protobuf.Reflection.EnumDescriptor Phase = WorkloadStatus.Descriptor.FindDescriptor<Google.Protobuf.Reflection.EnumDescriptor>("Phase");
    public static readonly Google.Protobuf.Reflection.EnumDescriptor Verdict = AgentStatus.Descriptor.FindDescriptor<Google.Protobuf.Reflection.EnumDescriptor>("State");
    public static readonly Google.Protobuf.Reflection.EnumDescriptor InstanceState = Launcher.V1.Instance.Descriptor.FindDescriptor<Google.Protobuf.Reflection.EnumDescriptor>("State");
    public static readonly Google.Protobuf.Reflection.EnumDescriptor SessionState = Registry.V1.Session.Descriptor.FindDescriptor<Google.Protobuf.Reflection.EnumDescriptor>("State");
}
