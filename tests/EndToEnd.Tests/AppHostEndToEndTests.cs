using System.Text.Json;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Grpc.Reflection.V1Alpha;
using Platform.Testing;

namespace Platform.EndToEnd.Tests;

/// <summary>The real AppHost with the four real services, as a newcomer runs it.</summary>
public sealed class AppHostEndToEndTests : IAsyncLifetime
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private static readonly string[] Services = ["registry", "launcher", "monitor", "supervisor"];
    private readonly string _stateDirectory = Directory.CreateTempSubdirectory("platform-e2e-").FullName;
    private AppHostProcess _appHost = null!;

    public Task InitializeAsync()
    {
        var dll = AppHostProcess.ProjectOutput(typeof(AppHostEndToEndTests).Assembly, "Platform.AppHost");
        _appHost = AppHostProcess.Start(dll, _stateDirectory);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task The_platform_comes_up_serves_heals_a_killed_service_and_stops_leaving_nothing_behind()
    {
        // Up: all four SERVING over grpc.health.v1, found through apphost.json.
        var state = await _appHost.WaitForAllServingAsync(StartTimeout);
        Assert.Equal(Services, state.Resources.Select(r => r.Name));
        Assert.Equal(_appHost.Pid, state.Pid);
        Assert.Contains("all 4 resources are up", _appHost.Output);

        // Each service is a real gRPC server whose unbuilt RPCs say so, with reflection and both health paths.
        await AssertServesContractAsync(state["registry"], "platform.registry.v1.SessionRegistry");
        var session = await AssertRegistryKeepsSessionsAsync(state["registry"]);
        var agent = await AssertLauncherRunsAnAgentAsync(state["launcher"]);
        await AssertServesContractAsync(state["launcher"], "platform.launcher.v1.Launcher");
        await AssertServesContractAsync(state["monitor"], "platform.monitor.v1.AgentMonitor");
        await AssertServesContractAsync(state["supervisor"], "platform.supervisor.v1.Supervisor");
        await AssertSupervisorHealthListsItsDependenciesAsync(state["supervisor"]);
        var supervised = await AssertSupervisorKeepsAWorkloadAliveAsync(state);

        // Heal: SIGKILL the registry; it comes back SERVING, on the same endpoints, and nothing else is touched.
        var before = state;
        AppHostProcess.Signal(before["registry"].Pid!.Value, AppHostProcess.SIGKILL);
        var after = await _appHost.WaitForStateAsync(
            s => s["registry"].Restarts == 1 && s["registry"].IsUp && s["registry"].Pid != before["registry"].Pid, StartTimeout);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, await AppHostProcess.CheckHealthAsync(after["registry"].GrpcUrl));
        using (var channel = GrpcChannel.ForAddress(after["registry"].GrpcUrl))
        {
            var kept = await new Registry.V1.SessionRegistry.SessionRegistryClient(channel).GetSessionAsync(new Registry.V1.GetSessionRequest { Id = session.Id });
            Assert.Equal(Registry.V1.Session.Types.State.Active, kept.State); // the restarted registry kept it
        }
        Assert.Equal(before["registry"].Endpoints, after["registry"].Endpoints);
        foreach (var name in Services.Skip(1))
        {
            Assert.Equal(before[name].Pid, after[name].Pid);
            Assert.Equal(0, after[name].Restarts);
        }
        Assert.Contains("registry: exited unexpectedly with signal 9", _appHost.Output);

        // The launcher SIGKILLed while its agent runs: restarted, it re-adopts the agent (which now hangs off the
        // AppHost, a subreaper), and the AppHost's stop must still leave nothing behind.
        AppHostProcess.Signal(after["launcher"].Pid!.Value, AppHostProcess.SIGKILL);
        after = await _appHost.WaitForStateAsync(s => s["launcher"].Restarts == 1 && s["launcher"].IsUp, StartTimeout);
        using (var channel = GrpcChannel.ForAddress(after["launcher"].GrpcUrl))
        {
            var adopted = await new Launcher.V1.Launcher.LauncherClient(channel).GetInstanceAsync(new Launcher.V1.GetInstanceRequest { Id = agent.Id });
            Assert.True(adopted.Adopted);
            Assert.Equal(Launcher.V1.Instance.Types.State.Running, adopted.State);
        }

        // Stop: SIGTERM to the AppHost; exit code 0 and no process of the platform left.
        var pids = after.Resources.Select(r => r.Pid!.Value).ToList();
        Assert.Equal(4, AppHostProcess.PlatformProcesses(_stateDirectory).Count);
        Assert.Equal(0, await _appHost.TerminateAsync(TimeSpan.FromSeconds(30)));
        Assert.Empty(AppHostProcess.PlatformProcesses(_stateDirectory));
        Assert.All(pids, pid => Assert.True(ProcessControl.ProcFs.Identify(pid) is null, $"pid {pid} is still alive"));
        Assert.True(ProcessControl.ProcFs.Identify((int)agent.Pid) is null, "the launched agent outlived the platform");
        Assert.True(ProcessControl.ProcFs.Identify((int)supervised) is null, "the supervised workload outlived the platform");
    }

    /// <summary>Through all four services: the supervisor has the launcher start a workload, the monitor probes it,
    /// and a SIGKILL of the workload brings generation 2 in the same trace. Returns the running pid.</summary>
    private static async Task<long> AssertSupervisorKeepsAWorkloadAliveAsync(AppHostState state)
    {
        using var channel = GrpcChannel.ForAddress(state["supervisor"].GrpcUrl);
        var supervisor = new Supervisor.V1.Supervisor.SupervisorClient(channel);
        var workload = await supervisor.ApplyWorkloadAsync(new Supervisor.V1.ApplyWorkloadRequest
        {
            Workload = new Supervisor.V1.Workload
            {
                Name = "e2e-agent",
                Launch = new Launcher.V1.LaunchSpec { Process = new Launcher.V1.ProcessSpec { Executable = "sleep", Args = { "300" } } },
                RestartPolicy = new Supervisor.V1.RestartPolicy { InitialBackoff = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)) },
                Health = new Supervisor.V1.HealthPolicy { Probe = new Monitor.V1.Target { Interval = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMilliseconds(200)), Process = new Monitor.V1.ProcessProbe() } },
            },
        });
        Assert.Equal(Supervisor.V1.WorkloadStatus.Types.Phase.Running, workload.Status.Phase);
        using (var monitorChannel = GrpcChannel.ForAddress(state["monitor"].GrpcUrl))
        {
            var monitor = new Monitor.V1.AgentMonitor.AgentMonitorClient(monitorChannel);
            await Eventually.ValueAsync(async () =>
            {
                try
                {
                    return (await monitor.GetStatusAsync(new Monitor.V1.GetStatusRequest { TargetId = "supervisor/e2e-agent/1/health" })).State;
                }
                catch (RpcException)
                {
                    return Monitor.V1.AgentStatus.Types.State.Unspecified;
                }
            }, s => s == Monitor.V1.AgentStatus.Types.State.Healthy, TimeSpan.FromSeconds(20), "the monitor to see the workload healthy");
        }
        AppHostProcess.Signal((int)workload.Status.Pid, AppHostProcess.SIGKILL);
        var second = await Eventually.ValueAsync(() => supervisor.GetWorkloadAsync(new Supervisor.V1.GetWorkloadRequest { Name = "e2e-agent" }).ResponseAsync,
            w => w.Status.Generation == 2 && w.Status.Phase == Supervisor.V1.WorkloadStatus.Types.Phase.Running, TimeSpan.FromSeconds(20), "generation 2");
        Assert.Equal(workload.Status.TraceId, second.Status.TraceId);
        Assert.Equal(9, second.Status.LastExit.Signal);
        return second.Status.Pid;
    }

    [Fact]
    public async Task When_the_AppHost_is_SIGKILLed_its_services_notice_and_stop()
    {
        await _appHost.WaitForAllServingAsync(StartTimeout);
        Assert.Equal(4, AppHostProcess.PlatformProcesses(_stateDirectory).Count);

        AppHostProcess.Signal(_appHost.Pid, AppHostProcess.SIGKILL);

        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (AppHostProcess.PlatformProcesses(_stateDirectory).Count > 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "services outlived their AppHost: " + string.Join(",", AppHostProcess.PlatformProcesses(_stateDirectory)));
            await Task.Delay(100);
        }
    }

    private static async Task AssertServesContractAsync(ResourceInfo resource, string serviceName)
    {
        using var channel = GrpcChannel.ForAddress(resource.GrpcUrl);

        var reflection = new ServerReflection.ServerReflectionClient(channel).ServerReflectionInfo();
        await reflection.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = "" });
        await reflection.RequestStream.CompleteAsync();
        Assert.True(await reflection.ResponseStream.MoveNext(CancellationToken.None));
        var services = reflection.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name).ToList();
        Assert.Contains(serviceName, services);
        Assert.Contains("grpc.health.v1.Health", services);

        if (serviceName is not ("platform.registry.v1.SessionRegistry" or "platform.launcher.v1.Launcher"))
        {
            // Built: asking for something nobody created is NOT_FOUND.
            var error = await Assert.ThrowsAsync<RpcException>(() => AskForUnknownAsync(channel, serviceName));
            Assert.Equal(StatusCode.NotFound, error.StatusCode);
        }

        using var http = new HttpClient();
        Assert.True((await http.GetAsync(resource.HttpUrl + "/alive")).IsSuccessStatusCode);
        Assert.True((await http.GetAsync(resource.HttpUrl + "/health")).IsSuccessStatusCode);
    }

    private static Task AskForUnknownAsync(GrpcChannel channel, string serviceName) => serviceName switch
    {
        "platform.monitor.v1.AgentMonitor" => new Monitor.V1.AgentMonitor.AgentMonitorClient(channel)
            .GetStatusAsync(new Monitor.V1.GetStatusRequest { TargetId = "x" }).ResponseAsync,
        _ => new Supervisor.V1.Supervisor.SupervisorClient(channel)
            .GetWorkloadAsync(new Supervisor.V1.GetWorkloadRequest { Name = "x" }).ResponseAsync,
    };

    /// <summary>The registry (built) keeps a session in the data directory the AppHost gave it.</summary>
    private async Task<Registry.V1.Session> AssertRegistryKeepsSessionsAsync(ResourceInfo registry)
    {
        using var channel = GrpcChannel.ForAddress(registry.GrpcUrl);
        var client = new Registry.V1.SessionRegistry.SessionRegistryClient(channel);
        var session = await client.RegisterSessionAsync(new Registry.V1.RegisterSessionRequest { Workload = "e2e", Instance = "1", Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMinutes(5)) });
        Assert.Equal(session.Id, (await client.GetSessionAsync(new Registry.V1.GetSessionRequest { Id = session.Id })).Id);
        Assert.True(File.Exists(Path.Combine(_stateDirectory, "registry", "registry.db")));
        return session;
    }

    /// <summary>The launcher (the AppHost allows arbitrary commands in its local profile) runs a process tree.</summary>
    private static async Task<Launcher.V1.Instance> AssertLauncherRunsAnAgentAsync(ResourceInfo launcher)
    {
        using var channel = GrpcChannel.ForAddress(launcher.GrpcUrl);
        var client = new Launcher.V1.Launcher.LauncherClient(channel);
        var instance = await client.LaunchAsync(new Launcher.V1.LaunchRequest
        {
            Process = new Launcher.V1.ProcessSpec { Executable = "sleep", Args = { "300" } },
            Workload = "e2e-agent",
        });
        Assert.Equal(Launcher.V1.Instance.Types.State.Running, instance.State);
        Assert.NotNull(ProcessControl.ProcFs.Identify((int)instance.Pid));
        return instance;
    }

    private static async Task AssertSupervisorHealthListsItsDependenciesAsync(ResourceInfo supervisor)
    {
        using var http = new HttpClient();
        using var report = JsonDocument.Parse(await http.GetStringAsync(supervisor.HttpUrl + "/health"));
        var entries = report.RootElement.GetProperty("entries");
        foreach (var dependency in new[] { "registry", "launcher", "monitor" })
            Assert.Equal("Healthy", entries.GetProperty($"dependency:{dependency}").GetProperty("status").GetString());
        Assert.Equal("Healthy", report.RootElement.GetProperty("status").GetString());
    }

    public async Task DisposeAsync()
    {
        await _appHost.DisposeAsync();
        try { Directory.Delete(_stateDirectory, recursive: true); } catch (IOException) { }
    }
}
