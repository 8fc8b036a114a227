using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using Aspire.Hosting.Testing;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Microsoft.Extensions.DependencyInjection;
using Platform.Testing;

namespace Platform.EndToEnd.Tests;

/// <summary>The real AppHost's app model through Aspire.Hosting.Testing: DCP runs the four services, ports randomised.</summary>
[Collection(AppHostCollection.Name)]
public sealed class PlatformAppTests : IAsyncLifetime
{
    internal static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);
    internal static readonly string[] Services = ["registry", "launcher", "monitor", "supervisor"];
    private static readonly string[] GrpcServices = ["platform.registry.v1.SessionRegistry", "platform.launcher.v1.Launcher", "platform.monitor.v1.AgentMonitor", "platform.supervisor.v1.Supervisor"];
    private readonly string _stateDirectory = Directory.CreateTempSubdirectory("platform-e2e-").FullName;
    private readonly List<DistributedApplication> _apps = [];

    private async Task<DistributedApplication> StartAsync(Action<IDistributedApplicationTestingBuilder>? change = null)
    {
        var builder = await DistributedApplicationTestingBuilder.CreateAsync<Projects.Platform_AppHost>([$"PLATFORM_STATE_DIR={_stateDirectory}"]);
        change?.Invoke(builder);
        var app = await builder.BuildAsync();
        _apps.Add(app);
        await app.StartAsync().WaitAsync(Timeout);
        return app;
    }

    private static async Task<Endpoints> WaitHealthyAsync(DistributedApplication app, params string[] names)
    {
        foreach (var name in names) await app.ResourceNotifications.WaitForResourceHealthyAsync(name, WaitBehavior.WaitOnResourceUnavailable).WaitAsync(Timeout);
        return new Endpoints(app);
    }

    [Fact]
    public async Task The_four_services_come_up_healthy_serve_and_heal_a_killed_service_without_touching_the_others()
    {
        var app = await StartAsync();
        var endpoints = await WaitHealthyAsync(app, Services);
        var token = AppHostState.Read(_stateDirectory).Token;

        // Each service is a real gRPC server with reflection and both health paths; the four work together.
        foreach (var (name, service) in Services.Zip(GrpcServices))
            await Contracts.AssertServesAsync(endpoints.Grpc(name), endpoints.Http(name), service, token);
        var session = await Contracts.AssertRegistryKeepsSessionsAsync(endpoints.Grpc("registry"), _stateDirectory, token);
        var agent = await Contracts.AssertLauncherRunsAnAgentAsync(endpoints.Grpc("launcher"), token);
        await Contracts.AssertSupervisorHealthListsItsDependenciesAsync(endpoints.Http("supervisor"));
        await Contracts.AssertSupervisorKeepsAWorkloadAliveAsync(endpoints.Grpc("supervisor"), endpoints.Grpc("monitor"), token);

        var pids = Services.ToDictionary(n => n, n => Pid(app, n));
        var state = AppHostState.Read(_stateDirectory);
        Assert.Equal(Services, state.Resources.Select(r => r.Name));
        Assert.All(state.Resources, r => Assert.True(r.IsUp, $"{r.Name} is {r.State}/{r.Health} in apphost.json"));

        // SIGKILL the registry: our restart policy brings it back on the same endpoint, with its data, the others untouched.
        AppHostProcess.Signal(pids["registry"], AppHostProcess.SIGKILL);
        await app.ResourceNotifications.WaitForResourceAsync("registry",
            e => Restarts(e.Snapshot) == 1 && e.Snapshot.HealthStatus == Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Healthy).WaitAsync(Timeout);
        Assert.NotEqual(pids["registry"], Pid(app, "registry"));
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, await AppHostProcess.CheckHealthAsync(endpoints.Grpc("registry")));
        using (var channel = PlatformChannel.Create(endpoints.Grpc("registry"), token))
        {
            var kept = await new Registry.V1.SessionRegistry.SessionRegistryClient(channel).GetSessionAsync(new Registry.V1.GetSessionRequest { Id = session.Id });
            Assert.Equal(Registry.V1.Session.Types.State.Active, kept.State);
        }
        foreach (var name in Services.Skip(1))
        {
            Assert.Equal(pids[name], Pid(app, name));
            Assert.Equal(0, Restarts(app, name));
        }
        await Eventually.ValueAsync(() => Task.FromResult(AppHostState.Read(_stateDirectory)["registry"]), r => r.Restarts == 1 && r.IsUp,
            Timeout, "apphost.json to show the registry's restart");

        // SIGKILL the launcher while its agent runs: restarted, it re-adopts the agent.
        AppHostProcess.Signal(pids["launcher"], AppHostProcess.SIGKILL);
        await app.ResourceNotifications.WaitForResourceAsync("launcher",
            e => Restarts(e.Snapshot) == 1 && e.Snapshot.HealthStatus == Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Healthy).WaitAsync(Timeout);
        using (var channel = PlatformChannel.Create(endpoints.Grpc("launcher"), token))
        {
            var adopted = await new Launcher.V1.Launcher.LauncherClient(channel).GetInstanceAsync(new Launcher.V1.GetInstanceRequest { Id = agent.Id });
            Assert.True(adopted.Adopted);
            Assert.Equal(Launcher.V1.Instance.Types.State.Running, adopted.State);
        }

        // A restart from the dashboard keeps the launcher's agents too (its own children, which DCP's tree stop would
        // take), and is not counted as a crash.
        var child = await Contracts.AssertLauncherRunsAnAgentAsync(endpoints.Grpc("launcher"), token);
        Assert.Equal(Pid(app, "launcher"), ProcessControl.ProcFs.ReadStat((int)child.Pid)!.Value.ParentPid);
        var commands = app.Services.GetRequiredService<ResourceCommandService>();
        var restart = await commands.ExecuteCommandAsync("launcher", KnownResourceCommands.RestartCommand);
        Assert.True(restart.Success, restart.Message);
        await app.ResourceNotifications.WaitForResourceHealthyAsync("launcher", WaitBehavior.WaitOnResourceUnavailable).WaitAsync(Timeout);
        Assert.NotNull(ProcessControl.ProcFs.Identify((int)agent.Pid));
        using (var channel = PlatformChannel.Create(endpoints.Grpc("launcher"), token))
        {
            var adopted = await new Launcher.V1.Launcher.LauncherClient(channel).GetInstanceAsync(new Launcher.V1.GetInstanceRequest { Id = child.Id });
            Assert.True(adopted.Adopted);
            Assert.Equal(Launcher.V1.Instance.Types.State.Running, adopted.State);
        }
        Assert.Equal(1, Restarts(app, "launcher"));
    }

    [Fact]
    public async Task A_service_that_cannot_start_is_left_stopped_with_its_reason_and_a_dashboard_stop_is_not_undone()
    {
        // The supervisor's data directory cannot exist: it fails at every start and never becomes healthy.
        var app = await StartAsync(builder => builder.CreateResourceBuilder<ProjectResource>("supervisor")
            .WithEnvironment("PLATFORM_DATA_DIR", "/dev/null/supervisor"));
        var endpoints = await WaitHealthyAsync(app, "registry", "launcher", "monitor");

        var gaveUp = await app.ResourceNotifications.WaitForResourceAsync("supervisor", e => e.Snapshot.State?.Text == "FailedToStart").WaitAsync(Timeout);
        var reason = gaveUp.Snapshot.Properties.Single(p => p.Name == "platform.restart.reason").Value?.ToString();
        Assert.StartsWith("exited 5 times without becoming healthy (last: exit code ", reason);
        Assert.Equal(4, Restarts(gaveUp.Snapshot));
        await Eventually.ValueAsync(() => Task.FromResult(AppHostState.Read(_stateDirectory)["supervisor"]), r => r.State == "FailedToStart",
            Timeout, "apphost.json to show the supervisor left stopped");

        // The monitor stopped by a person stays stopped (a backoff and more later), and the others keep serving.
        var monitorPid = Pid(app, "monitor");
        var commands = app.Services.GetRequiredService<ResourceCommandService>();
        var stop = await commands.ExecuteCommandAsync("monitor", KnownResourceCommands.StopCommand);
        Assert.True(stop.Success, stop.Message);
        await app.ResourceNotifications.WaitForResourceAsync("monitor", e => e.Snapshot.State?.Text is "Exited" or "Finished").WaitAsync(Timeout);
        Assert.True(ProcessControl.ProcFs.Identify(monitorPid) is null);
        await Task.Delay(TimeSpan.FromSeconds(3)); // the first backoff is 1 s: a restart would have begun by now
        var monitor = await app.ResourceNotifications.WaitForResourceAsync("monitor", _ => true);
        Assert.True(monitor.Snapshot.State?.Text is "Exited" or "Finished", $"the stopped monitor is {monitor.Snapshot.State?.Text}");
        Assert.Equal(0, Restarts(monitor.Snapshot));
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, await AppHostProcess.CheckHealthAsync(endpoints.Grpc("registry")));
    }

    internal static int Restarts(CustomResourceSnapshot s) =>
        s.Properties.FirstOrDefault(p => p.Name == "platform.restarts")?.Value is int n ? n : 0;

    private static int Restarts(DistributedApplication app, string name) => Restarts(Snapshot(app, name));

    private static int Pid(DistributedApplication app, string name) =>
        int.Parse(Snapshot(app, name).Properties.Single(p => p.Name == "executable.pid").Value!.ToString()!, System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async Task With_samples_the_declared_workloads_are_resources_that_show_their_live_phase_and_restarts_and_obey_their_commands()
    {
        var samples = Directory.CreateTempSubdirectory("platform-samples-").FullName;
        var builder = await DistributedApplicationTestingBuilder.CreateAsync<Projects.Platform_AppHost>(
            ["--samples", $"PLATFORM_STATE_DIR={_stateDirectory}", $"PLATFORM_SAMPLES={samples}"]);
        var app = await builder.BuildAsync();
        _apps.Add(app);
        await app.StartAsync().WaitAsync(Timeout);
        string[] declared = ["worker", "flaky", "sleepy", "stubborn", "tmux-agent"];
        var model = app.Services.GetRequiredService<DistributedApplicationModel>();
        Assert.Equal(declared, model.Resources.OfType<WorkloadResource>().Select(r => r.Name));

        static string? Property(ResourceEvent e, string name) => e.Snapshot.Properties.FirstOrDefault(p => p.Name == name)?.Value?.ToString();
        static long Number(ResourceEvent e, string name) => long.TryParse(Property(e, name), System.Globalization.CultureInfo.InvariantCulture, out var n) ? n : -1;
        Task<ResourceEvent> Until(string name, Func<ResourceEvent, bool> condition) => app.ResourceNotifications.WaitForResourceAsync(name, condition).WaitAsync(Timeout);

        // Applied once the supervisor is healthy; each shows its live phase, generation and pid.
        foreach (var name in declared) await Until(name, e => e.Snapshot.ResourceType == "Workload" && Property(e, "platform.generation") is not (null or "0"));
        // The pid shown is the live process (a generation replaced meanwhile, say after a slow first heartbeat on a busy
        // machine, shows its successor's pid next).
        var worker = await Until("worker", e => e.Snapshot.State?.Text == "Running" && Number(e, "platform.pid") > 0 &&
            Platform.ProcessControl.ProcFs.Identify((int)Number(e, "platform.pid")) is not null);
        Assert.Matches("^[0-9a-f]{32}$", Property(worker, "platform.trace-id"));

        // flaky crashes: its restart count rises as the supervisor restarts it.
        await Until("flaky", e => Number(e, "platform.restarts") >= 1);
        // sleepy goes quiet: the monitor's verdict is shown, IDLE.
        await Until("sleepy", e => Property(e, "platform.verdict")?.Contains("IDLE", StringComparison.Ordinal) == true);

        // The commands: restart makes a new generation; stop removes it from the supervisor; start applies it again.
        var commands = app.Services.GetRequiredService<ResourceCommandService>();
        var stubborn = model.Resources.OfType<WorkloadResource>().Single(r => r.Name == "stubborn");
        var before = Number(await Until("stubborn", e => e.Snapshot.State?.Text == "Running"), "platform.generation");
        Assert.True((await commands.ExecuteCommandAsync(stubborn, "workload-restart")).Success);
        await Until("stubborn", e => Number(e, "platform.generation") == before + 1 && e.Snapshot.State?.Text == "Running");
        var supervisor = new Supervisor.V1.Supervisor.SupervisorClient(PlatformChannel.Create(new Endpoints(app).Grpc("supervisor"), AppHostState.Read(_stateDirectory).Token));
        Assert.True((await commands.ExecuteCommandAsync(stubborn, "workload-stop")).Success);
        await Until("stubborn", e => e.Snapshot.State?.Text == "Stopped");
        await GrpcAssert.StatusAsync(StatusCode.NotFound, supervisor.GetWorkloadAsync(new Supervisor.V1.GetWorkloadRequest { Name = "stubborn" }).ResponseAsync);
        Assert.True((await commands.ExecuteCommandAsync(stubborn, "workload-start")).Success);
        await Until("stubborn", e => e.Snapshot.State?.Text == "Running");
        try { Directory.Delete(samples, recursive: true); } catch (IOException) { }
    }

    [Fact]
    public async Task With_nodes_each_launcher_is_a_node_of_its_own_and_workloads_spread_over_them()
    {
        var builder = await DistributedApplicationTestingBuilder.CreateAsync<Projects.Platform_AppHost>(["--nodes", "2", $"PLATFORM_STATE_DIR={_stateDirectory}"]);
        var app = await builder.BuildAsync();
        _apps.Add(app);
        await app.StartAsync().WaitAsync(Timeout);
        var endpoints = await WaitHealthyAsync(app, "registry", "launcher", "launcher-2", "monitor", "supervisor");
        var token = AppHostState.Read(_stateDirectory).Token;
        var supervisor = new Supervisor.V1.Supervisor.SupervisorClient(PlatformChannel.Create(endpoints.Grpc("supervisor"), token));
        Launcher.V1.Launcher.LauncherClient LauncherOf(string resource) => new(PlatformChannel.Create(endpoints.Grpc(resource), token));

        // Two launchers, two nodes with their own names, each in the registry with its own address.
        var registry = new Registry.V1.SessionRegistry.SessionRegistryClient(PlatformChannel.Create(endpoints.Grpc("registry"), token));
        var nodes = await Eventually.ValueAsync(
            async () => (await registry.ListSessionsAsync(new Registry.V1.ListSessionsRequest { Workload = "platform-node", State = Registry.V1.Session.Types.State.Active })).Sessions,
            s => s.Count == 2, Timeout, "two nodes registered");
        Assert.Equal(["node-1", "node-2"], nodes.Select(n => n.Instance).Order());
        Assert.NotEqual(nodes[0].Attributes["address"], nodes[1].Attributes["address"]);

        var names = Enumerable.Range(0, 4).Select(i => $"spread-{i}").ToList();
        foreach (var name in names)
        {
            await Eventually.ValueAsync(async () =>
            {
                try
                {
                    await supervisor.ApplyWorkloadAsync(new Supervisor.V1.ApplyWorkloadRequest { Workload = new Supervisor.V1.Workload
                    {
                        Name = name,
                        Launch = new Launcher.V1.LaunchSpec { Process = new Launcher.V1.ProcessSpec { Executable = "sleep", Args = { "300" } } },
                    } });
                    return true;
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable)
                {
                    return false;
                }
            }, applied => applied, Timeout, $"{name} applied");
        }
        var placed = new List<Supervisor.V1.Workload>();
        foreach (var name in names)
            placed.Add(await Eventually.ValueAsync(() => supervisor.GetWorkloadAsync(new Supervisor.V1.GetWorkloadRequest { Name = name }).ResponseAsync,
                w => w.Status.Phase == Supervisor.V1.WorkloadStatus.Types.Phase.Running, Timeout, $"{name} running"));
        // Two on each node (the fewest first), each running on the launcher of its node.
        Assert.Equal([2, 2], placed.GroupBy(w => w.Status.Node).OrderBy(g => g.Key).Select(g => g.Count()));
        foreach (var (resource, node) in new[] { ("launcher", "node-1"), ("launcher-2", "node-2") })
        {
            var running = (await LauncherOf(resource).ListInstancesAsync(new Launcher.V1.ListInstancesRequest { State = Launcher.V1.Instance.Types.State.Running })).Instances;
            Assert.Equal(placed.Where(w => w.Status.Node == node).Select(w => w.Status.InstanceId).Order(), running.Select(i => i.Id).Order());
            Assert.All(running, i => Assert.Equal(node, i.Node));
        }
    }

    [Fact]
    public async Task With_native_the_services_run_their_Native_AOT_builds_and_work_together()
    {
        // eng/test.sh publishes them (eng/publish-native.sh) before the tests.
        var root = AppHostProcess.RepositoryRoot(typeof(PlatformAppTests).Assembly);
        Assert.True(Directory.Exists(Path.Combine(root, "artifacts", "publish")), "no Native AOT builds under artifacts/publish: run eng/publish-native.sh");
        var builder = await DistributedApplicationTestingBuilder.CreateAsync<Projects.Platform_AppHost>(["--native", $"PLATFORM_STATE_DIR={_stateDirectory}"]);
        var app = await builder.BuildAsync();
        _apps.Add(app);
        await app.StartAsync().WaitAsync(Timeout);
        var endpoints = await WaitHealthyAsync(app, Services);
        var token = AppHostState.Read(_stateDirectory).Token;

        // Each service's process is its Native AOT build: no dotnet host, no managed assembly beside it.
        foreach (var name in Services)
        {
            var exe = new FileInfo($"/proc/{Pid(app, name)}/exe").LinkTarget!;
            Assert.StartsWith(Path.Combine(root, "artifacts", "publish") + "/", exe, StringComparison.Ordinal);
            Assert.False(File.Exists(exe + ".dll"), $"{exe} has a managed assembly beside it: not a Native AOT build");
        }
        foreach (var (name, service) in Services.Zip(GrpcServices))
            await Contracts.AssertServesAsync(endpoints.Grpc(name), endpoints.Http(name), service, token);
        await Contracts.AssertSupervisorKeepsAWorkloadAliveAsync(endpoints.Grpc("supervisor"), endpoints.Grpc("monitor"), token);
    }

    /// <summary>The resource's snapshot now (the watch replays the current state of every resource first).</summary>
    private static CustomResourceSnapshot Snapshot(DistributedApplication app, string name) =>
        app.ResourceNotifications.WaitForResourceAsync(name, _ => true).WaitAsync(Timeout).GetAwaiter().GetResult().Snapshot;

    public async Task InitializeAsync() => await Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var app in _apps)
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
        try { Directory.Delete(_stateDirectory, recursive: true); } catch (IOException) { }
    }

    private sealed class Endpoints(DistributedApplication app)
    {
        public string Grpc(string name) => app.GetEndpoint(name, "grpc").ToString().TrimEnd('/');
        public string Http(string name) => app.GetEndpoint(name, "http").ToString().TrimEnd('/');
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AppHostCollection
{
    public const string Name = "AppHost";
}
