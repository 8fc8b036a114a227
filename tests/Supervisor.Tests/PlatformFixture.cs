using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using Microsoft.Extensions.DependencyInjection;
using Platform.AgentMonitor;
using Platform.Launcher;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.SessionRegistry;
using Platform.Supervisor.V1;
using Platform.Testing;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Tests;

/// <summary>All four services: registry, launcher and monitor here, the supervisor as its own process.</summary>
public abstract class SupervisorTestBase : IAsyncLifetime
{
    protected static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    protected readonly string DataDirectory = Directory.CreateTempSubdirectory("supervisor-test-").FullName;
    protected InProcessService Registry = null!;
    protected InProcessService LauncherHost = null!;
    protected InProcessService MonitorHost = null!;
    protected ServiceProcess SupervisorProcess = null!;
    protected V1.Supervisor.SupervisorClient Client = null!;
    protected Launcher.V1.Launcher.LauncherClient LauncherClient = null!;
    private GrpcChannel? _supervisorChannel;
    /// <summary>0 until the launcher first binds (any free port); then its port, so a restarted launcher keeps it.</summary>
    protected int LauncherPort;

    public virtual async Task InitializeAsync()
    {
        var registryDir = Sub("registry");
        Registry = await InProcessService.StartAsync(registryDir, b =>
        {
            b.AddSessionRegistry();
            b.Services.Configure<RegistryOptions>(o => o.DataDirectory = registryDir);
        }, app => app.MapSessionRegistry());
        await StartLauncherAsync();
        var monitorDir = Sub("monitor");
        MonitorHost = await InProcessService.StartAsync(monitorDir, b =>
        {
            b.Configuration["services:registry:grpc:0"] = Registry.Address;
            b.AddAgentMonitor();
            b.Services.Configure<MonitorOptions>(o => o.DiscoverFromRegistry = false);
        }, app => app.MapAgentMonitor());
        await StartSupervisorAsync();
    }

    protected string Sub(string name) => Directory.CreateDirectory(Path.Combine(DataDirectory, name)).FullName;

    protected async Task StartLauncherAsync()
    {
        var launcherDir = Sub("launcher");
        LauncherHost = await InProcessService.StartAsync(launcherDir, b =>
        {
            b.Configuration["services:registry:grpc:0"] = Registry.Address;
            b.AddLauncher();
            b.Services.Configure<LauncherOptions>(o =>
            {
                o.DataDirectory = launcherDir;
                o.AllowArbitraryCommands = true;
                o.Templates["sleeper"] = new TemplateOptions { Executable = "sleep", Args = ["300"] };
            });
        }, app => app.MapLauncher(), LauncherPort);
        LauncherPort = new Uri(LauncherHost.Address).Port;
        LauncherClient = new Launcher.V1.Launcher.LauncherClient(LauncherHost.NewChannel().Intercept(DefaultDeadline.Minute));
    }

    /// <summary>Settings of one test class for the supervisor process (environment variables, on top of the common ones).</summary>
    protected virtual IReadOnlyDictionary<string, string> SupervisorSettings => new Dictionary<string, string>();

    protected static string SupervisorDll => AppHostProcess.ProjectOutput(typeof(SupervisorTestBase).Assembly, "Platform.Supervisor");

    protected async Task StartSupervisorAsync()
    {
        SupervisorProcess = await ServiceProcess.StartAsync(SupervisorDll, Sub("supervisor"), SupervisorEnvironment());
        UseSupervisor(SupervisorProcess);
    }

    /// <summary>Client is now <paramref name="supervisor"/>'s (DisposeAsync stops the one in SupervisorProcess).</summary>
    protected void UseSupervisor(ServiceProcess supervisor)
    {
        SupervisorProcess = supervisor;
        _supervisorChannel?.Dispose();
        _supervisorChannel = GrpcChannel.ForAddress(SupervisorProcess.GrpcUrl);
        Client = new V1.Supervisor.SupervisorClient(_supervisorChannel.Intercept(DefaultDeadline.Minute));
    }

    /// <summary>What the supervisor process is started with: its dependencies' addresses and the class's settings.</summary>
    protected Dictionary<string, string> SupervisorEnvironment()
    {
        var settings = new Dictionary<string, string>
        {
            ["services__registry__grpc__0"] = Registry.Address,
            ["services__launcher__grpc__0"] = LauncherHost.Address,
            ["services__monitor__grpc__0"] = MonitorHost.Address,
            ["Supervisor__ResyncInterval"] = "00:00:01",
        };
        foreach (var (key, value) in SupervisorSettings) settings[key] = value;
        return settings;
    }

    public virtual async Task DisposeAsync()
    {
        if (SupervisorProcess is not null)
        {
            // Delete what the test left, so the launcher stops its trees.
            try
            {
                foreach (var w in (await Client.ListWorkloadsAsync(new ListWorkloadsRequest())).Workloads)
                    await Client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = w.Name });
            }
            catch (RpcException)
            {
            }
            await SupervisorProcess.DisposeAsync();
        }
        _supervisorChannel?.Dispose();
        if (LauncherHost is not null)
        {
            foreach (var i in (await LauncherClient.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000 })).Instances)
                await LauncherClient.StopInstanceAsync(new StopInstanceRequest { Id = i.Id, Grace = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.Zero) });
            await LauncherHost.DisposeAsync();
        }
        if (MonitorHost is not null) await MonitorHost.DisposeAsync();
        if (Registry is not null) await Registry.DisposeAsync();
        try { Directory.Delete(DataDirectory, recursive: true); } catch (IOException) { }
    }

    protected static Workload Shell(string name, string script, RestartPolicy? policy = null) => new()
    {
        Name = name,
        Launch = new LaunchSpec { Process = new ProcessSpec { Executable = "/bin/sh", Args = { "-c", script } } },
        RestartPolicy = policy,
        StopGrace = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMilliseconds(500)),
    };

    protected Task<Workload> ApplyAsync(Workload workload) => Client.ApplyWorkloadAsync(new ApplyWorkloadRequest { Workload = workload }).ResponseAsync;

    protected Task<Workload> WaitAsync(string name, Func<Workload, bool> until, string what, TimeSpan? timeout = null) =>
        Eventually.ValueAsync(() => Client.GetWorkloadAsync(new GetWorkloadRequest { Name = name }).ResponseAsync, until, timeout ?? Timeout, what);

    protected Task<Workload> RunningAsync(string name, long generation) =>
        WaitAsync(name, w => w.Status.Phase == Phase.Running && w.Status.Generation == generation, $"{name} running generation {generation}");

    /// <summary>Running instances of a workload as the launcher sees them.</summary>
    protected async Task<List<Instance>> LiveInstancesAsync(string name) =>
        [.. (await LauncherClient.ListInstancesAsync(new ListInstancesRequest { Workload = name, State = Instance.Types.State.Running })).Instances
            .Where(i => ProcFs.ReadStat((int)i.Pid) is { IsZombie: false })];

    protected static Task<RpcException> AssertStatus(StatusCode expected, Task call, string? detail = null) => Testing.GrpcAssert.StatusAsync(expected, call, detail);
}
