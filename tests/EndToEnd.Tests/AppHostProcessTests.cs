using Grpc.Net.Client;
using Platform.Testing;

namespace Platform.EndToEnd.Tests;

/// <summary>
/// The AppHost as a process, as `dotnet run --project AppHost` starts it: what Ctrl+C and a SIGKILL of it leave behind.
/// </summary>
[Collection(AppHostCollection.Name)]
public sealed class AppHostProcessTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = PlatformAppTests.Timeout;
    private readonly string _stateDirectory = Directory.CreateTempSubdirectory("platform-e2e-").FullName;
    private readonly string _dll = AppHostProcess.ProjectOutput(typeof(AppHostProcessTests).Assembly, "Platform.AppHost");
    private readonly List<AppHostProcess> _started = [];

    private AppHostProcess Start()
    {
        var appHost = AppHostProcess.Start(_dll, _stateDirectory);
        _started.Add(appHost);
        return appHost;
    }

    [Fact]
    public async Task Ctrl_C_stops_every_service_DCP_the_dashboard_and_every_agent_leaving_no_process_and_no_open_database()
    {
        var appHost = Start();
        var state = await appHost.WaitForAllServingAsync(Timeout);
        Assert.NotNull(state.Dashboard);
        Assert.NotNull(state.DashboardPid);
        var agent = await Contracts.AssertLauncherRunsAnAgentAsync(state["launcher"].GrpcUrl, state.Token);
        var supervised = await Contracts.AssertSupervisorKeepsAWorkloadAliveAsync(state["supervisor"].GrpcUrl, state["monitor"].GrpcUrl, state.Token);

        var own = appHost.OwnProcesses();
        Assert.Contains(own, p => p.Command.Contains("dcp") && p.Command.Contains("--monitor"));
        Assert.Contains(own, p => p.Pid == state.DashboardPid);
        Assert.Equal(4, AppHostProcess.PlatformProcesses(_stateDirectory).Count);

        Assert.Equal(0, await appHost.TerminateAsync(Timeout));

        var left = await Eventually.ValueAsync(
            () => Task.FromResult(own.Where(p => ProcessControl.ProcFs.ReadStat(p.Pid) is { IsZombie: false })
                .Concat(new[] { ((int)agent.Pid, "agent"), ((int)supervised, "supervised workload") }.Where(p => ProcessControl.ProcFs.ReadStat(p.Item1) is { IsZombie: false }))
                .ToList()),
            l => l.Count == 0, Timeout, "every process of the platform to be gone");
        Assert.Empty(left);

        // Each service exited by itself, not killed by DCP when its grace ran out: it closed its SQLite database, which
        // removes the write-ahead log that a killed process leaves beside it.
        Assert.NotEmpty(Directory.EnumerateFiles(_stateDirectory, "*.db", SearchOption.AllDirectories));
        var logs = Directory.EnumerateFiles(_stateDirectory, "*.db-wal", SearchOption.AllDirectories).ToList();
        Assert.True(logs.Count == 0, "a service did not close its database (killed?): " + string.Join(", ", logs));
    }

    [Fact]
    public async Task After_a_SIGKILL_of_the_AppHost_DCP_stops_the_services_and_the_next_run_adopts_the_agents_left()
    {
        var appHost = Start();
        var state = await appHost.WaitForAllServingAsync(Timeout);
        var agent = await Contracts.AssertLauncherRunsAnAgentAsync(state["launcher"].GrpcUrl, state.Token);
        // DCP stops a resource with its process tree: only agents that are no longer the launcher's children (their
        // launcher was killed and restarted, and adopted them) outlive a SIGKILL of the AppHost.
        var launcherPid = state["launcher"].Pid;
        AppHostProcess.Signal(launcherPid!.Value, AppHostProcess.SIGKILL);
        state = await appHost.WaitForStateAsync(s => s["launcher"].Restarts == 1 && s["launcher"].IsUp, Timeout);
        var own = appHost.OwnProcesses();

        AppHostProcess.Signal(appHost.Pid, AppHostProcess.SIGKILL);

        await Eventually.ValueAsync(() => Task.FromResult(own.Count(p => ProcessControl.ProcFs.ReadStat(p.Pid) is { IsZombie: false })),
            n => n == 0, Timeout, "DCP to stop everything the killed AppHost had started");
        Assert.NotNull(ProcessControl.ProcFs.Identify((int)agent.Pid)); // agents outlive the platform's processes

        var next = Start();
        state = await next.WaitForAllServingAsync(Timeout);
        using (var channel = state.Channel("launcher"))
        {
            var adopted = await new Launcher.V1.Launcher.LauncherClient(channel).GetInstanceAsync(new Launcher.V1.GetInstanceRequest { Id = agent.Id });
            Assert.True(adopted.Adopted);
            Assert.Equal(Launcher.V1.Instance.Types.State.Running, adopted.State);
        }
        Assert.Equal(0, await next.TerminateAsync(Timeout));
        await Eventually.ValueAsync(() => Task.FromResult(ProcessControl.ProcFs.ReadStat((int)agent.Pid) is { IsZombie: false }),
            alive => !alive, Timeout, "the adopted agent to stop with the platform");
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var appHost in _started) await appHost.DisposeAsync();
        try { Directory.Delete(_stateDirectory, recursive: true); } catch (IOException) { }
    }
}
