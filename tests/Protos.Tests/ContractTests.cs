using System.Diagnostics;
using System.Reflection;
using Google.Protobuf.Reflection;

namespace Platform.Protos.Tests;

/// <summary>
/// The names below are the contract that tools outside the project rely on (issue 2): fields may be added, these
/// may not be renamed.
/// </summary>
public class ContractTests
{
    private enum Kind { Unary, ServerStream, BidiStream }

    public static TheoryData<string, string, string> Rpcs => new()
    {
        { "platform.registry.v1.SessionRegistry", "RegisterSession", nameof(Kind.Unary) },
        { "platform.registry.v1.SessionRegistry", "Heartbeat", nameof(Kind.Unary) },
        { "platform.registry.v1.SessionRegistry", "KeepAlive", nameof(Kind.BidiStream) },
        { "platform.registry.v1.SessionRegistry", "GetSession", nameof(Kind.Unary) },
        { "platform.registry.v1.SessionRegistry", "ListSessions", nameof(Kind.Unary) },
        { "platform.registry.v1.SessionRegistry", "EndSession", nameof(Kind.Unary) },
        { "platform.registry.v1.SessionRegistry", "WatchSessions", nameof(Kind.ServerStream) },
        { "platform.launcher.v1.Launcher", "Launch", nameof(Kind.Unary) },
        { "platform.launcher.v1.Launcher", "StopInstance", nameof(Kind.Unary) },
        { "platform.launcher.v1.Launcher", "GetInstance", nameof(Kind.Unary) },
        { "platform.launcher.v1.Launcher", "ListInstances", nameof(Kind.Unary) },
        { "platform.launcher.v1.Launcher", "StreamLogs", nameof(Kind.ServerStream) },
        { "platform.launcher.v1.Launcher", "WatchInstanceEvents", nameof(Kind.ServerStream) },
        { "platform.monitor.v1.AgentMonitor", "AddTarget", nameof(Kind.Unary) },
        { "platform.monitor.v1.AgentMonitor", "RemoveTarget", nameof(Kind.Unary) },
        { "platform.monitor.v1.AgentMonitor", "ListTargets", nameof(Kind.Unary) },
        { "platform.monitor.v1.AgentMonitor", "GetStatus", nameof(Kind.Unary) },
        { "platform.monitor.v1.AgentMonitor", "ListStatuses", nameof(Kind.Unary) },
        { "platform.monitor.v1.AgentMonitor", "WatchStatuses", nameof(Kind.ServerStream) },
        { "platform.supervisor.v1.Supervisor", "ApplyWorkload", nameof(Kind.Unary) },
        { "platform.supervisor.v1.Supervisor", "DeleteWorkload", nameof(Kind.Unary) },
        { "platform.supervisor.v1.Supervisor", "GetWorkload", nameof(Kind.Unary) },
        { "platform.supervisor.v1.Supervisor", "ListWorkloads", nameof(Kind.Unary) },
        { "platform.supervisor.v1.Supervisor", "RestartWorkload", nameof(Kind.Unary) },
        { "platform.supervisor.v1.Supervisor", "WatchWorkloads", nameof(Kind.ServerStream) },
    };

    public static TheoryData<string, string> Fields => new()
    {
        { "platform.registry.v1.Session", "id workload instance node pid state labels attributes ttl create_time heartbeat_time expire_time end_time end_reason revision" },
        { "platform.registry.v1.RegisterSessionRequest", "workload instance node pid labels attributes ttl request_id" },
        { "platform.registry.v1.GetSessionRequest", "id" },
        { "platform.registry.v1.EndSessionRequest", "id reason" },
        { "platform.registry.v1.HeartbeatRequest", "ids" },
        { "platform.registry.v1.ListSessionsRequest", "page_size page_token" },
        { "platform.registry.v1.WatchSessionsRequest", "from_revision" },
        { "platform.launcher.v1.LaunchRequest", "template process workload labels request_id stop_grace env" },
        { "platform.launcher.v1.ProcessSpec", "executable args env working_directory" },
        { "platform.launcher.v1.Instance", "id workload node pid state exit_code signal child_process_count rss_bytes start_time exit_time session_id labels" },
        { "platform.launcher.v1.StopInstanceRequest", "id grace" },
        { "platform.launcher.v1.GetInstanceRequest", "id" },
        { "platform.launcher.v1.LogEntry", "time stream text" },
        { "platform.launcher.v1.LaunchSpec", "template process" },
        { "platform.monitor.v1.Target", "id workload interval timeout idle_after failure_threshold process heartbeat_file registry_heartbeat grpc_health http tcp output_activity tmux_pane" },
        { "platform.monitor.v1.ProcessProbe", "pid" },
        { "platform.monitor.v1.HeartbeatFileProbe", "path max_age" },
        { "platform.monitor.v1.RegistryHeartbeatProbe", "session_id" },
        { "platform.monitor.v1.GrpcHealthProbe", "address service" },
        { "platform.monitor.v1.HttpProbe", "url" },
        { "platform.monitor.v1.TcpProbe", "address" },
        { "platform.monitor.v1.OutputActivityProbe", "path unhealthy_patterns idle_patterns" },
        { "platform.monitor.v1.TmuxPaneProbe", "target unhealthy_patterns idle_patterns" },
        { "platform.monitor.v1.AgentStatus", "target_id state detail last_probe_time last_activity_time consecutive_failures" },
        { "platform.monitor.v1.GetStatusRequest", "target_id" },
        { "platform.supervisor.v1.Workload", "name launch restart_policy health stop_grace status" },
        { "platform.supervisor.v1.RestartPolicy", "mode initial_backoff multiplier max_backoff max_restarts restart_window cooloff stable_after" },
        { "platform.supervisor.v1.HealthPolicy", "heartbeat_timeout probe" },
        { "platform.supervisor.v1.WorkloadStatus", "phase instance_id pid restart_count next_restart_time last_exit trace_id" },
        { "platform.supervisor.v1.ApplyWorkloadRequest", "workload request_id" },
        { "platform.supervisor.v1.GetWorkloadRequest", "name" },
        { "platform.supervisor.v1.DeleteWorkloadRequest", "name" },
        { "platform.supervisor.v1.RestartWorkloadRequest", "name" },
    };

    public static TheoryData<string, string> Enums => new()
    {
        { "platform.registry.v1.Session.State", "STATE_UNSPECIFIED ACTIVE ENDED EXPIRED" },
        { "platform.launcher.v1.Instance.State", "STATE_UNSPECIFIED STARTING RUNNING STOPPING EXITED" },
        { "platform.launcher.v1.InstanceEvent.Type", "TYPE_UNSPECIFIED STARTED EXITED ADOPTED" },
        { "platform.launcher.v1.LogEntry.Stream", "STREAM_UNSPECIFIED STDOUT STDERR" },
        { "platform.monitor.v1.AgentStatus.State", "STATE_UNSPECIFIED HEALTHY IDLE UNHEALTHY UNKNOWN" },
        { "platform.supervisor.v1.RestartPolicy.Mode", "MODE_UNSPECIFIED ALWAYS ON_FAILURE NEVER" },
        { "platform.supervisor.v1.WorkloadStatus.Phase", "PHASE_UNSPECIFIED PENDING RUNNING BACKING_OFF COOLING_OFF STOPPED FAILED" },
        { "platform.registry.v1.SessionEvent.Type", "TYPE_UNSPECIFIED CREATED UPDATED ENDED EXPIRED" },
    };

    private static readonly FileDescriptor[] Files =
    [
        Registry.V1.RegistryReflection.Descriptor,
        Launcher.V1.LauncherReflection.Descriptor,
        Monitor.V1.MonitorReflection.Descriptor,
        Supervisor.V1.SupervisorReflection.Descriptor,
    ];

    private static IDescriptor Find(string fullName) =>
        Files.SelectMany(f => f.Services.Cast<IDescriptor>()
                .Concat(AllMessages(f.MessageTypes))
                .Concat(f.EnumTypes)
                .Concat(AllMessages(f.MessageTypes).SelectMany(m => m.EnumTypes)))
            .SingleOrDefault(d => d.FullName == fullName)
        ?? throw new Xunit.Sdk.XunitException($"{fullName} is not in the contracts");

    private static IEnumerable<MessageDescriptor> AllMessages(IEnumerable<MessageDescriptor> messages) =>
        messages.SelectMany(m => AllMessages(m.NestedTypes).Prepend(m));

    [Theory]
    [MemberData(nameof(Rpcs))]
    public void Every_named_rpc_exists_with_its_streaming_kind(string service, string rpc, string kind)
    {
        var method = ((ServiceDescriptor)Find(service)).FindMethodByName(rpc);

        Assert.NotNull(method);
        var actual = (method.IsClientStreaming, method.IsServerStreaming) switch
        {
            (false, false) => Kind.Unary,
            (false, true) => Kind.ServerStream,
            (true, true) => Kind.BidiStream,
            _ => throw new Xunit.Sdk.XunitException($"{rpc} is client-streaming only"),
        };
        Assert.Equal(kind, actual.ToString());
    }

    [Theory]
    [MemberData(nameof(Fields))]
    public void Every_named_field_exists(string message, string fields)
    {
        var descriptor = (MessageDescriptor)Find(message);

        Assert.All(fields.Split(' '), field => Assert.True(descriptor.FindFieldByName(field) is not null, $"{message} has no field {field}"));
    }

    [Theory]
    [MemberData(nameof(Enums))]
    public void Every_enum_starts_unspecified_and_has_its_named_values(string name, string values)
    {
        var descriptor = (EnumDescriptor)Find(name);

        Assert.Equal(0, descriptor.Values.Single(v => v.Name.EndsWith("_UNSPECIFIED", StringComparison.Ordinal)).Number);
        Assert.All(values.Split(' '), value => Assert.NotNull(descriptor.FindValueByName(value)));
    }

    [Fact]
    public void Every_rpc_has_a_comment()
    {
        // AIP: a comment on every RPC saying what it does and which errors it returns.
        foreach (var file in new[] { "registry", "launcher", "monitor", "supervisor" })
        {
            var path = Path.Combine(Metadata("ProtosPath"), "platform", file, "v1", file + ".proto");
            var lines = File.ReadAllLines(path);
            for (var i = 0; i < lines.Length; i++)
            {
                if (!lines[i].TrimStart().StartsWith("rpc ", StringComparison.Ordinal)) continue;
                Assert.True(lines[i - 1].TrimStart().StartsWith("//", StringComparison.Ordinal), $"{path}:{i + 1} has no comment");
            }
        }
    }

    [Fact]
    public void The_protos_compile_unchanged_with_stock_protoc_for_other_languages()
    {
        var tools = Metadata("GrpcToolsPath");
        var protoc = Path.Combine(tools, "tools", "linux_x64", "protoc");
        var include = Path.Combine(tools, "build", "native", "include");
        var root = Metadata("ProtosPath");
        var output = Directory.CreateTempSubdirectory("protoc-").FullName;
        try
        {
            foreach (var language in new[] { "cpp", "java", "python", "php", "ruby" })
                Directory.CreateDirectory(Path.Combine(output, language));
            var protos = Directory.GetFiles(Path.Combine(root, "platform"), "*.proto", SearchOption.AllDirectories)
                .Select(p => Path.GetRelativePath(root, p)).Order().ToList();
            Assert.Equal(4, protos.Count);

            var info = new ProcessStartInfo(protoc) { RedirectStandardError = true, WorkingDirectory = root };
            foreach (var arg in new[] { $"-I{root}", $"-I{include}", $"--cpp_out={output}/cpp", $"--java_out={output}/java",
                         $"--python_out={output}/python", $"--php_out={output}/php", $"--ruby_out={output}/ruby", "--fatal_warnings" }.Concat(protos))
                info.ArgumentList.Add(arg);
            using var process = Process.Start(info)!;
            var errors = process.StandardError.ReadToEnd();
            process.WaitForExit();

            Assert.True(process.ExitCode == 0, errors);
            Assert.True(File.Exists(Path.Combine(output, "cpp", "platform", "supervisor", "v1", "supervisor.pb.cc")));
            Assert.True(File.Exists(Path.Combine(output, "python", "platform", "registry", "v1", "registry_pb2.py")));
        }
        finally
        {
            Directory.Delete(output, recursive: true);
        }
    }

    private static string Metadata(string key) =>
        typeof(ContractTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value!;
}
