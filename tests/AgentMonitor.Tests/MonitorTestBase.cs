using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.DependencyInjection;
using Platform.Monitor.V1;
using Platform.ProcessControl;
using Platform.Testing;
using State = Platform.Monitor.V1.AgentStatus.Types.State;

namespace Platform.AgentMonitor.Tests;

/// <summary>The real monitor in this process on a loopback port, probing real things.</summary>
public abstract class MonitorTestBase : IAsyncLifetime
{
    protected static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);
    protected readonly string DataDirectory = Directory.CreateTempSubdirectory("monitor-test-").FullName;
    protected InProcessService Host = null!;
    protected Monitor.V1.AgentMonitor.AgentMonitorClient Client = null!;
    private readonly List<SpawnedProcess> _processes = [];

    protected virtual void Configure(MonitorOptions options) { }
    protected virtual void ConfigureHost(Microsoft.AspNetCore.Builder.WebApplicationBuilder builder) { }

    public virtual async Task InitializeAsync()
    {
        Host = await InProcessService.StartAsync(DataDirectory, builder =>
        {
            builder.AddAgentMonitor();
            builder.Services.Configure<MonitorOptions>(o =>
            {
                o.DiscoverFromRegistry = false;
                Configure(o);
            });
            ConfigureHost(builder);
        }, app => app.MapAgentMonitor());
        Client = new Monitor.V1.AgentMonitor.AgentMonitorClient(Host.NewChannel().Intercept(DefaultDeadline.Minute));
    }

    public virtual async Task DisposeAsync()
    {
        await Host.DisposeAsync();
        foreach (var process in _processes)
        {
            await ProcessTree.StopAsync(process.Identity, TimeSpan.Zero);
            await process.Exited.WaitAsync(Timeout);
        }
        try { Directory.Delete(DataDirectory, recursive: true); } catch (IOException) { }
    }

    /// <summary>Starts a process the test owns; stopped at the end of the test.</summary>
    protected SpawnedProcess Spawn(string executable, params string[] args)
    {
        var process = ChildReaper.Shared.Spawn(new SpawnRequest(executable, args,
            new Dictionary<string, string> { ["PATH"] = Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin" }));
        _processes.Add(process);
        return process;
    }

    protected static Target NewTarget(string id, TimeSpan? interval = null, int failureThreshold = 1) => new()
    {
        Id = id,
        Workload = "test",
        Interval = Duration.FromTimeSpan(interval ?? TimeSpan.FromMilliseconds(100)),
        Timeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(2)),
        FailureThreshold = failureThreshold,
    };

    protected Task<Target> AddAsync(Target target) => Client.AddTargetAsync(new AddTargetRequest { Target = target }).ResponseAsync;

    /// <summary>The statuses of the target's next <paramref name="probes"/> probes (<see cref="MonitorProbes.ProbedAsync"/>).</summary>
    protected Task<List<AgentStatus>> ProbedAsync(string id, int probes) => Client.ProbedAsync(id, probes, Timeout);

    /// <summary>Waits for the target to reach <paramref name="state"/> and returns that status.</summary>
    protected Task<AgentStatus> StatusAsync(string id, State state, TimeSpan? timeout = null) =>
        Eventually.ValueAsync(async () =>
        {
            try
            {
                return await Client.GetStatusAsync(new GetStatusRequest { TargetId = id });
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
            {
                return new AgentStatus { TargetId = id, Detail = "no such target (yet)" };
            }
        }, s => s.State == state, timeout ?? Timeout, $"{id} to be {state}");

    protected static Task<RpcException> AssertStatus(StatusCode expected, Task call, string? detail = null) => GrpcAssert.StatusAsync(expected, call, detail);
}
