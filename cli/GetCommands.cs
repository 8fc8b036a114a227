using System.Globalization;
using Google.Protobuf;
using Platform.Launcher.V1;
using Platform.Monitor.V1;
using Platform.Registry.V1;
using Platform.Supervisor.V1;

namespace Platform.Cli;

/// <summary>get workloads|instances|sessions|targets [NAME]: one or all, as a table, wide, JSON or YAML.</summary>
public static class GetCommands
{
    public static readonly string[] Kinds = ["workloads", "instances", "sessions", "targets"];

    /// <summary>The kind a word names: plural, singular or short (wl, inst, sess), as kubectl takes them.</summary>
    public static string Kind(string word) => word.ToLowerInvariant() switch
    {
        "workloads" or "workload" or "wl" or "w" => "workloads",
        "instances" or "instance" or "inst" or "i" => "instances",
        "sessions" or "session" or "sess" or "s" => "sessions",
        "targets" or "target" or "agents" or "agent" or "t" => "targets",
        _ => throw new CliException(ExitCode.Usage, $"'{word}' is not something to get: one of {string.Join(", ", Kinds)}"),
    };

    public static Task<int> RunAsync(Context c, string kind, string? name, string? workload) => Kind(kind) switch
    {
        "workloads" => WorkloadsAsync(c, name),
        "instances" => InstancesAsync(c, name, workload),
        "sessions" => SessionsAsync(c, name, workload),
        _ => TargetsAsync(c, name, workload),
    };

    private static async Task<int> WorkloadsAsync(Context c, string? name)
    {
        List<Workload> all;
        if (name is not null) all = [await c.Ask("supervisor", () => c.Platform.Supervisor.GetWorkloadAsync(new GetWorkloadRequest { Name = name }, deadline: c.Deadline).ResponseAsync)];
        else
        {
            all = [];
            var token = "";
            do
            {
                var page = await c.Ask("supervisor", () => c.Platform.Supervisor.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000, PageToken = token }, deadline: c.Deadline).ResponseAsync);
                all.AddRange(page.Workloads);
                token = page.NextPageToken;
            } while (token.Length > 0);
        }
        if (Structured(c, name is null ? new ListWorkloadsResponse { Workloads = { all } } : all[0])) return ExitCode.Ok;
        WorkloadTable(c.Out, all, DateTimeOffset.UtcNow, c.Format == Format.Wide);
        return ExitCode.Ok;
    }

    /// <summary>The workloads table (its columns the golden test pins down).</summary>
    public static void WorkloadTable(Output output, IEnumerable<Workload> all, DateTimeOffset now, bool wide)
    {
        string[] header = wide ? ["NAME", "PHASE", "GEN", "RESTARTS", "PID", "AGE", "INSTANCE", "LAST EXIT", "NEXT START", "MESSAGE"] : ["NAME", "PHASE", "GEN", "RESTARTS", "PID", "AGE"];
        output.Table(header, all.Select(w =>
        {
            var s = w.Status ?? new WorkloadStatus();
            var row = new List<Cell> { w.Name, Phases.Cell(s.Phase), Number(s.Generation), Number(s.TotalRestarts), s.Pid == 0 ? "-" : Number(s.Pid), Output.Age(w.CreateTime, now) };
            if (wide) row.AddRange([Dash(s.InstanceId), s.LastExit is null ? "-" : WorkloadCommands.Exit(s.LastExit, now), Output.In(s.NextRestartTime, now), Dash(s.Message)]);
            return (IReadOnlyList<Cell>)row;
        }));
    }

    private static async Task<int> InstancesAsync(Context c, string? id, string? workload)
    {
        List<Instance> all;
        if (id is not null) all = [(await InstanceCommands.FindAsync(c, id, "")).Instance];
        else
        {
            // Every node's, when launchers run as nodes.
            all = [];
            foreach (var (_, launcher) in await c.Platform.LaunchersAsync(c.Deadline, c.Cancellation))
            {
                var token = "";
                do
                {
                    var page = await c.Ask("launcher", () => launcher.ListInstancesAsync(new ListInstancesRequest { Workload = workload ?? "", PageSize = 1000, PageToken = token }, deadline: c.Deadline).ResponseAsync);
                    all.AddRange(page.Instances);
                    token = page.NextPageToken;
                } while (token.Length > 0);
            }
        }
        if (Structured(c, id is null ? new ListInstancesResponse { Instances = { all } } : all[0])) return ExitCode.Ok;
        var now = DateTimeOffset.UtcNow;
        var wide = c.Format == Format.Wide;
        string[] header = wide ? ["ID", "WORKLOAD", "STATE", "PID", "CHILDREN", "RSS", "CPU", "AGE", "NODE", "EXIT", "ARMED", "SESSION"] : ["ID", "WORKLOAD", "STATE", "PID", "CHILDREN", "RSS", "AGE"];
        c.Out.Table(header, all.Select(i =>
        {
            var row = new List<Cell> { i.Id, i.Workload, State(i.State), Number(i.Pid), Number(i.ChildProcessCount), Output.Bytes(i.RssBytes), Output.Age(i.StartTime, now) };
            if (wide)
            {
                row.Insert(6, i.CpuTime is null ? "-" : WorkloadCommands.Duration(i.CpuTime));
                row.AddRange([Dash(i.Node), i.HasExitCode ? $"code {i.ExitCode}" : i.HasSignal ? $"signal {i.Signal}" : "-", i.SuccessorArmed ? "yes" : "no", Dash(i.SessionId)]);
            }
            return (IReadOnlyList<Cell>)row;
        }));
        return ExitCode.Ok;
    }

    private static Cell State(Instance.Types.State state) => new(Output.Name(Enums.InstanceState, (int)state), state switch
    {
        Instance.Types.State.Running => "32",
        Instance.Types.State.Starting or Instance.Types.State.Stopping => "33",
        _ => "90",
    });

    private static async Task<int> SessionsAsync(Context c, string? id, string? workload)
    {
        List<Session> all;
        if (id is not null) all = [await c.Ask("registry", () => c.Platform.Registry.GetSessionAsync(new GetSessionRequest { Id = id }, deadline: c.Deadline).ResponseAsync)];
        else
        {
            all = [];
            var token = "";
            do
            {
                var page = await c.Ask("registry", () => c.Platform.Registry.ListSessionsAsync(new ListSessionsRequest { Workload = workload ?? "", PageSize = 1000, PageToken = token }, deadline: c.Deadline).ResponseAsync);
                all.AddRange(page.Sessions);
                token = page.NextPageToken;
            } while (token.Length > 0);
        }
        if (Structured(c, id is null ? new ListSessionsResponse { Sessions = { all } } : all[0])) return ExitCode.Ok;
        var now = DateTimeOffset.UtcNow;
        var wide = c.Format == Format.Wide;
        string[] header = wide ? ["ID", "WORKLOAD", "INSTANCE", "STATE", "PID", "NODE", "AGE", "EXPIRES", "REVISION", "LABELS"] : ["ID", "WORKLOAD", "INSTANCE", "STATE", "PID", "AGE"];
        c.Out.Table(header, all.Select(s =>
        {
            var state = new Cell(Output.Name(Enums.SessionState, (int)s.State), s.State == Session.Types.State.Active ? "32" : "90");
            var row = new List<Cell> { s.Id, s.Workload, s.Instance, state, s.Pid == 0 ? "-" : Number(s.Pid), Output.Age(s.CreateTime, now) };
            if (wide) row.InsertRange(5, [Dash(s.Node)]);
            if (wide) row.AddRange([s.State == Session.Types.State.Active ? Output.In(s.ExpireTime, now) : "-", Number(s.Revision),
                s.Labels.Count == 0 ? "-" : string.Join(",", s.Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}"))]);
            return (IReadOnlyList<Cell>)row;
        }));
        return ExitCode.Ok;
    }

    private static async Task<int> TargetsAsync(Context c, string? id, string? workload)
    {
        List<AgentStatus> all;
        if (id is not null) all = [await c.Ask("monitor", () => c.Platform.Monitor.GetStatusAsync(new GetStatusRequest { TargetId = id }, deadline: c.Deadline).ResponseAsync)];
        else
        {
            all = [];
            var token = "";
            do
            {
                var page = await c.Ask("monitor", () => c.Platform.Monitor.ListStatusesAsync(new ListStatusesRequest { Workload = workload ?? "", PageSize = 1000, PageToken = token }, deadline: c.Deadline).ResponseAsync);
                all.AddRange(page.Statuses);
                token = page.NextPageToken;
            } while (token.Length > 0);
        }
        if (Structured(c, id is null ? new ListStatusesResponse { Statuses = { all } } : all[0])) return ExitCode.Ok;
        var now = DateTimeOffset.UtcNow;
        var wide = c.Format == Format.Wide;
        string[] header = wide ? ["TARGET", "WORKLOAD", "VERDICT", "FAILURES", "PROBED", "SINCE", "ACTIVE", "DETAIL"] : ["TARGET", "WORKLOAD", "VERDICT", "PROBED", "DETAIL"];
        c.Out.Table(header, all.Select(s => (IReadOnlyList<Cell>)(wide
            ? [s.TargetId, Dash(s.Workload), Verdicts.Cell(s.State), Number(s.ConsecutiveFailures), Output.Age(s.LastProbeTime, now), Output.Age(s.TransitionTime, now), Output.Age(s.LastActivityTime, now), Dash(s.Detail)]
            : [s.TargetId, Dash(s.Workload), Verdicts.Cell(s.State), Output.Age(s.LastProbeTime, now), Dash(s.Detail)])));
        return ExitCode.Ok;
    }

    /// <summary>Prints the message when the format is JSON or YAML; says whether it did.</summary>
    private static bool Structured(Context c, IMessage message)
    {
        if (c.Format is not (Format.Json or Format.Yaml)) return false;
        c.Out.Message(message, c.Format);
        return true;
    }

    private static string Number(long n) => n.ToString(CultureInfo.InvariantCulture);

    private static string Dash(string text) => text.Length == 0 ? "-" : text;
}
