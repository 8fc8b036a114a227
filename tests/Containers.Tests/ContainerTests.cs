using DotNet.Testcontainers.Containers;
using Grpc.Core.Interceptors;
using Platform.Registry.V1;
using Platform.Supervisor.V1;
using Platform.Testing;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Containers.Tests;

/// <summary>The four services as containers on one Docker network, two launchers as two nodes, with the environment
/// the Kubernetes manifests give them (service discovery by name, nodes through the registry).</summary>
[Collection(ContainersCollection.Name)]
public sealed class ContainerTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private static Dictionary<string, string> Registry => new()
    {
        ["services__registry__grpc__0"] = "http://registry:5101",
    };

    private static Dictionary<string, string> Launcher(string node) => new(Registry)
    {
        ["Launcher__RegisterNode"] = "true",
        ["Launcher__Node"] = node,
        ["Launcher__Address"] = $"http://{node}:5111",
        ["Launcher__NodeLease"] = "00:00:03",
        ["Launcher__Templates__sleeper__Executable"] = "/bin/sleep",
        ["Launcher__Templates__sleeper__Args__0"] = "600",
    };

    [Fact]
    public async Task Applied_workloads_run_on_a_node_restart_after_a_kill_move_when_their_node_stops_and_sessions_survive_a_registry_restart()
    {
        await using var platform = await PlatformContainers.CreateAsync();
        var data = await platform.VolumeAsync("registry");
        var registry = await platform.StartServiceAsync("registry", "registry", new Dictionary<string, string>(), data);
        var nodes = new Dictionary<string, IContainer>
        {
            ["node-1"] = await platform.StartServiceAsync("launcher", "node-1", Launcher("node-1")),
            ["node-2"] = await platform.StartServiceAsync("launcher", "node-2", Launcher("node-2")),
        };
        await platform.StartServiceAsync("monitor", "monitor", Registry);
        var supervisorContainer = await platform.StartServiceAsync("supervisor", "supervisor", new Dictionary<string, string>(Registry)
        {
            ["services__monitor__grpc__0"] = "http://monitor:5121",
            ["Supervisor__Nodes"] = "registry",
        });
        using var supervisorChannel = PlatformChannel.Create(PlatformContainers.GrpcUrl(supervisorContainer, "supervisor"), PlatformContainers.Token);
        var supervisor = new Supervisor.V1.Supervisor.SupervisorClient(supervisorChannel.Intercept(DefaultDeadline.Minute));
        SessionRegistry.SessionRegistryClient RegistryClient(out Grpc.Net.Client.GrpcChannel channel)
        {
            channel = PlatformChannel.Create(PlatformContainers.GrpcUrl(registry, "registry"), PlatformContainers.Token);
            return new SessionRegistry.SessionRegistryClient(channel.Intercept(DefaultDeadline.Minute));
        }

        // Both nodes registered, then a workload applied: it runs on one of them, and its session is in the registry.
        var sessions = RegistryClient(out var registryChannel);
        await Eventually.ValueAsync(async () => (await sessions.ListSessionsAsync(new ListSessionsRequest { Workload = "platform-node", State = Session.Types.State.Active })).Sessions.Count,
            n => n == 2, Timeout, "two nodes in the registry");
        await Eventually.ValueAsync(async () =>
        {
            try
            {
                await supervisor.ApplyWorkloadAsync(new ApplyWorkloadRequest { Workload = new Workload { Name = "boxed", Launch = new Launcher.V1.LaunchSpec { Template = "sleeper" } } });
                return true;
            }
            catch (Grpc.Core.RpcException e) when (e.StatusCode == Grpc.Core.StatusCode.Unavailable)
            {
                return false;
            }
        }, ok => ok, Timeout, "the workload applied");
        var first = await Eventually.ValueAsync(() => supervisor.GetWorkloadAsync(new GetWorkloadRequest { Name = "boxed" }).ResponseAsync,
            w => w.Status.Phase == Phase.Running && w.Status.Node.Length > 0, Timeout, "boxed running on a node");
        var live = await Eventually.ValueAsync(async () => (await sessions.ListSessionsAsync(new ListSessionsRequest { Workload = "boxed", State = Session.Types.State.Active })).Sessions,
            s => s.Count == 1, Timeout, "the session of boxed");
        Assert.Equal(first.Status.Node, live[0].Node);

        // Its process killed inside its node's container: restarted there, generation 2.
        var node = nodes[first.Status.Node];
        var kill = await node.ExecAsync(["/bin/sh", "-c", $"kill -9 {first.Status.Pid}"]); // the shell's kill: the base has no procps
        Assert.True(kill.ExitCode == 0, kill.Stderr);
        var second = await Eventually.ValueAsync(() => supervisor.GetWorkloadAsync(new GetWorkloadRequest { Name = "boxed" }).ResponseAsync,
            w => w.Status.Phase == Phase.Running && w.Status.Generation > first.Status.Generation, Timeout, "boxed restarted");
        Assert.Equal(first.Status.Node, second.Status.Node);

        // Its node's container stopped: past the node's lease the workload runs on the other node.
        await node.StopAsync();
        var other = first.Status.Node == "node-1" ? "node-2" : "node-1";
        var moved = await Eventually.ValueAsync(() => supervisor.GetWorkloadAsync(new GetWorkloadRequest { Name = "boxed" }).ResponseAsync,
            w => w.Status.Phase == Phase.Running && w.Status.Node == other, Timeout, $"boxed running on {other}");
        Assert.True(moved.Status.Generation > second.Status.Generation);

        // The registry container stopped and started again: every session is still there (its volume).
        var before = await Eventually.ValueAsync(async () => (await sessions.ListSessionsAsync(new ListSessionsRequest { PageSize = 1000 })).Sessions,
            s => s.Any(x => x.Workload == "boxed" && x.Node == other && x.State == Session.Types.State.Active), Timeout, "the moved instance's session");
        registryChannel.Dispose();
        await registry.StopAsync();
        await registry.StartAsync();
        await PlatformContainers.WaitServingAsync(registry, "registry");
        sessions = RegistryClient(out registryChannel);
        var after = (await sessions.ListSessionsAsync(new ListSessionsRequest { PageSize = 1000 })).Sessions;
        Assert.Superset(before.Select(s => s.Id).ToHashSet(), after.Select(s => s.Id).ToHashSet());
        Assert.Contains(after, s => s.Workload == "boxed" && s.Node == other && s.State == Session.Types.State.Active);
        registryChannel.Dispose();
        await supervisor.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = "boxed" });
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ContainersCollection
{
    public const string Name = "Containers";
}

/// <summary>The registry's image on PostgreSQL in a container: two replicas on one database.</summary>
[Collection(ContainersCollection.Name)]
public sealed class PostgresContainerTests
{
    [Fact]
    public async Task Two_registry_replicas_on_PostgreSQL_in_a_container_lose_no_session_when_one_is_killed()
    {
        await using var platform = await PlatformContainers.CreateAsync();
        await platform.StartPostgresAsync("postgres");
        var store = new Dictionary<string, string> { ["ConnectionStrings__registry-store"] = "Host=postgres;Username=platform;Database=postgres" };
        var a = await platform.StartServiceAsync("registry", "registry-a", store);
        var b = await platform.StartServiceAsync("registry", "registry-b", store);
        SessionRegistry.SessionRegistryClient Client(IContainer container, List<Grpc.Net.Client.GrpcChannel> channels)
        {
            var channel = PlatformChannel.Create(PlatformContainers.GrpcUrl(container, "registry"), PlatformContainers.Token);
            channels.Add(channel);
            return new SessionRegistry.SessionRegistryClient(channel.Intercept(DefaultDeadline.Minute));
        }
        var channels = new List<Grpc.Net.Client.GrpcChannel>();
        try
        {
            var clients = new[] { Client(a, channels), Client(b, channels) };
            // 100 registrations, half through each replica, at once.
            var registered = await Task.WhenAll(Enumerable.Range(0, 100).Select(i => clients[i % 2].RegisterSessionAsync(new RegisterSessionRequest
            {
                Workload = "contained", Instance = $"i-{i}", Node = "n", Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMinutes(10)),
            }).ResponseAsync));
            // Revisions are global: 100 distinct ones, whichever replica took the write.
            Assert.Equal(100, registered.Select(s => s.Revision).Distinct().Count());

            // Replica a SIGKILLed: b has every session; a started again has them too.
            Assert.Equal(0, await PlatformContainers.RunAsync("docker", ["kill", "--signal", "KILL", a.Name.TrimStart('/')]));
            var listed = (await clients[1].ListSessionsAsync(new ListSessionsRequest { Workload = "contained", State = Session.Types.State.Active, PageSize = 1000 })).Sessions;
            Assert.Equal(registered.Select(s => s.Id).Order(), listed.Select(s => s.Id).Order());
            await a.StartAsync();
            await PlatformContainers.WaitServingAsync(a, "registry");
            var again = Client(a, channels);
            listed = (await again.ListSessionsAsync(new ListSessionsRequest { Workload = "contained", State = Session.Types.State.Active, PageSize = 1000 })).Sessions;
            Assert.Equal(registered.Select(s => s.Id).Order(), listed.Select(s => s.Id).Order());
        }
        finally
        {
            foreach (var channel in channels) channel.Dispose();
        }
    }
}
