using System.Text.Json;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Reflection.V1Alpha;
using Platform.Testing;

namespace Platform.EndToEnd.Tests;

/// <summary>What each running service must do, asserted against its real endpoints.</summary>
internal static class Contracts
{
    public static async Task AssertServesAsync(string grpcUrl, string httpUrl, string serviceName, string token)
    {
        using var channel = PlatformChannel.Create(grpcUrl, token);

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
        Assert.True((await http.GetAsync(httpUrl + "/alive")).IsSuccessStatusCode);
        Assert.True((await http.GetAsync(httpUrl + "/health")).IsSuccessStatusCode);
    }

    private static Task AskForUnknownAsync(GrpcChannel channel, string serviceName) => serviceName switch
    {
        "platform.monitor.v1.AgentMonitor" => new Monitor.V1.AgentMonitor.AgentMonitorClient(channel)
            .GetStatusAsync(new Monitor.V1.GetStatusRequest { TargetId = "x" }).ResponseAsync,
        _ => new Supervisor.V1.Supervisor.SupervisorClient(channel)
            .GetWorkloadAsync(new Supervisor.V1.GetWorkloadRequest { Name = "x" }).ResponseAsync,
    };

    /// <summary>The registry keeps a session in the data directory the AppHost gave it.</summary>
    public static async Task<Registry.V1.Session> AssertRegistryKeepsSessionsAsync(string grpcUrl, string stateDirectory, string token)
    {
        using var channel = PlatformChannel.Create(grpcUrl, token);
        var client = new Registry.V1.SessionRegistry.SessionRegistryClient(channel);
        var session = await client.RegisterSessionAsync(new Registry.V1.RegisterSessionRequest { Workload = "e2e", Instance = "1", Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMinutes(5)) });
        Assert.Equal(session.Id, (await client.GetSessionAsync(new Registry.V1.GetSessionRequest { Id = session.Id })).Id);
        Assert.True(File.Exists(Path.Combine(stateDirectory, "registry", "registry.db")));
        // The AppHost turned authentication on: without the run's token (apphost.json, the owner's only) nothing is served.
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(stateDirectory, "apphost.json")));
        using var bare = GrpcChannel.ForAddress(grpcUrl);
        await GrpcAssert.StatusAsync(Grpc.Core.StatusCode.Unauthenticated,
            new Registry.V1.SessionRegistry.SessionRegistryClient(bare).GetSessionAsync(new Registry.V1.GetSessionRequest { Id = session.Id }).ResponseAsync);
        return session;
    }

    /// <summary>The launcher (the AppHost allows arbitrary commands in its local profile) runs a process tree.</summary>
    public static async Task<Launcher.V1.Instance> AssertLauncherRunsAnAgentAsync(string grpcUrl, string token)
    {
        using var channel = PlatformChannel.Create(grpcUrl, token);
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

    public static async Task AssertSupervisorHealthListsItsDependenciesAsync(string httpUrl)
    {
        using var http = new HttpClient();
        using var report = JsonDocument.Parse(await http.GetStringAsync(httpUrl + "/health"));
        var entries = report.RootElement.GetProperty("entries");
        foreach (var dependency in new[] { "registry", "launcher", "monitor" })
            Assert.Equal("Healthy", entries.GetProperty($"dependency:{dependency}").GetProperty("status").GetString());
        Assert.Equal("Healthy", report.RootElement.GetProperty("status").GetString());
    }
    /// <summary>Through all four services: the supervisor has the launcher start a workload, the monitor probes it,
    /// and a SIGKILL of the workload brings generation 2 in the same trace. Returns the running pid.</summary>
    public static async Task<long> AssertSupervisorKeepsAWorkloadAliveAsync(string supervisorUrl, string monitorUrl, string token)
    {
        using var channel = PlatformChannel.Create(supervisorUrl, token);
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
        using (var monitorChannel = PlatformChannel.Create(monitorUrl, token))
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
}
