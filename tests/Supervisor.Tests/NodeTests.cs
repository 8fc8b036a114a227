using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Supervisor.V1;
using Platform.Testing;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Tests;

/// <summary>
/// Three launcher processes as three nodes (announced in the registry, Launcher:RegisterNode) and a Supervisor that
/// places workloads on them (Supervisor:Nodes=registry): placement by selector, by name and by count; a node lost with
/// its agents; a node cut off past its lease and back (fencing).
/// </summary>
public sealed class NodeTests : SupervisorTestBase
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(3);
    private readonly Dictionary<string, (ServiceProcess Process, GrpcChannel Channel, Launcher.V1.Launcher.LauncherClient Client)> _nodes = new(StringComparer.Ordinal);

    private static string LauncherDll => AppHostProcess.ProjectOutput(typeof(NodeTests).Assembly, "Platform.Launcher");

    protected override IReadOnlyDictionary<string, string> SupervisorSettings => new Dictionary<string, string>
    {
        ["Supervisor__Nodes"] = "registry",
    };

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        await Task.WhenAll(
            StartNodeAsync("node-1", new() { ["zone"] = "a", ["disk"] = "ssd" }),
            StartNodeAsync("node-2", new() { ["zone"] = "a" }),
            StartNodeAsync("node-3", new() { ["zone"] = "b" }));
    }

    private async Task StartNodeAsync(string name, Dictionary<string, string> labels)
    {
        var env = new Dictionary<string, string>
        {
            ["services__registry__grpc__0"] = Registry.Address,
            ["Launcher__RegisterNode"] = "true",
            ["Launcher__Node"] = name,
            ["Launcher__NodeLease"] = Lease.ToString(),
            ["Launcher__AllowArbitraryCommands"] = "true",
        };
        foreach (var (key, value) in labels) env[$"Launcher__Labels__{key}"] = value;
        var process = await ServiceProcess.StartAsync(LauncherDll, Sub(name), env);
        var channel = GrpcChannel.ForAddress(process.GrpcUrl);
        lock (_nodes) _nodes[name] = (process, channel, new Launcher.V1.Launcher.LauncherClient(channel.Intercept(DefaultDeadline.Minute)));
    }

    private async Task<List<Instance>> RunningOnAsync(string node, string? workload = null) =>
        [.. (await _nodes[node].Client.ListInstancesAsync(new ListInstancesRequest { Workload = workload ?? "", State = Instance.Types.State.Running, PageSize = 1000 })).Instances
            .Where(i => ProcFs.ReadStat((int)i.Pid) is { IsZombie: false })];

    private async Task<Dictionary<string, List<Workload>>> ByNodeAsync(IEnumerable<string> names)
    {
        var result = new Dictionary<string, List<Workload>>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            var w = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = name });
            (result.TryGetValue(w.Status.Node, out var list) ? list : result[w.Status.Node] = []).Add(w);
        }
        return result;
    }

    /// <summary>Applies a sleeper per name (placed anywhere), waits until all run, and says where each is.</summary>
    private async Task<Dictionary<string, List<Workload>>> RunAllAsync(IReadOnlyList<string> names)
    {
        foreach (var name in names) await ApplyAsync(Sleeper(name));
        foreach (var name in names) await WaitAsync(name, w => w.Status.Phase == Phase.Running, $"{name} running");
        return await ByNodeAsync(names);
    }

    private static Workload Sleeper(string name, string? selector = null, string? node = null)
    {
        var w = Shell(name, "exec sleep 300", new RestartPolicy { InitialBackoff = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)) });
        if (selector is not null || node is not null) w.Placement = new Placement { NodeSelector = selector ?? "", NodeName = node ?? "" };
        return w;
    }

    /// <summary>Returns once the three nodes take placements (until a node is reconciled, nothing is placed there): a
    /// workload pinned to each runs, then they are deleted.</summary>
    private async Task WaitForNodesAsync()
    {
        foreach (var node in _nodes.Keys) await ApplyAsync(Sleeper($"probe-{node}", node: node));
        foreach (var node in _nodes.Keys) await WaitAsync($"probe-{node}", w => w.Status.Phase == Phase.Running, $"a workload placed on {node}");
        foreach (var node in _nodes.Keys) await Client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = $"probe-{node}" });
    }

    [Fact]
    public async Task Thirty_workloads_spread_by_selector_name_and_count_and_one_no_node_fits_says_why()
    {
        await WaitForNodesAsync();
        // 10 on zone=a (node-1 and node-2, 5 each), 4 on node-3 by name, then 16 anywhere: the fewest first, so 10 each.
        var names = new List<string>();
        for (var i = 0; i < 10; i++) names.Add((await ApplyAsync(Sleeper($"zone-a-{i}", selector: "zone=a"))).Name);
        for (var i = 0; i < 4; i++) names.Add((await ApplyAsync(Sleeper($"pinned-{i}", node: "node-3"))).Name);
        for (var i = 0; i < 16; i++) names.Add((await ApplyAsync(Sleeper($"any-{i}"))).Name);
        foreach (var name in names) await WaitAsync(name, w => w.Status.Phase == Phase.Running, $"{name} running");

        var byNode = await ByNodeAsync(names);
        Assert.Equal(["node-1", "node-2", "node-3"], byNode.Keys.Order());
        Assert.All(byNode.Values, list => Assert.Equal(10, list.Count));
        Assert.All(names.Where(n => n.StartsWith("zone-a-", StringComparison.Ordinal)), n => Assert.DoesNotContain(byNode["node-3"], w => w.Name == n));
        Assert.All(names.Where(n => n.StartsWith("pinned-", StringComparison.Ordinal)), n => Assert.Contains(byNode["node-3"], w => w.Name == n));
        // Each runs where its status says, once, and nowhere else.
        foreach (var (node, workloads) in byNode)
        {
            var running = await RunningOnAsync(node);
            foreach (var w in workloads)
                Assert.Equal([w.Status.InstanceId], running.Where(i => i.Workload == w.Name).Select(i => i.Id));
            Assert.Equal(10, running.Count);
        }

        // No node fits: PENDING, and the status says why; nothing runs anywhere.
        var nowhere = await ApplyAsync(Sleeper("nowhere", selector: "zone=c"));
        Assert.Equal(Phase.Pending, nowhere.Status.Phase);
        Assert.Contains("cannot be placed: no node matches the node selector 'zone=c'", nowhere.Status.Message);
        Assert.Contains("node-3 {zone=b}", nowhere.Status.Message);
        var unknown = await ApplyAsync(Sleeper("unknown-node", node: "node-9"));
        Assert.Contains("node 'node-9' is not registered", unknown.Status.Message);
        foreach (var node in _nodes.Keys) Assert.Empty(await RunningOnAsync(node, "nowhere"));

        // Its placement changed to a node that fits: it starts there. A running workload whose node no longer fits moves.
        var moved = Sleeper("nowhere", selector: "zone=b");
        await ApplyAsync(moved);
        var placed = await WaitAsync("nowhere", w => w.Status.Phase == Phase.Running, "nowhere placed once a node fits");
        Assert.Equal("node-3", placed.Status.Node);
        var zoneA = byNode["node-1"].First(w => w.Name.StartsWith("zone-a-", StringComparison.Ordinal));
        await ApplyAsync(Sleeper(zoneA.Name, selector: "zone=b"));
        var rehomed = await WaitAsync(zoneA.Name, w => w.Status.Phase == Phase.Running && w.Status.Node == "node-3", $"{zoneA.Name} moved to node-3");
        Assert.True(rehomed.Status.Generation > zoneA.Status.Generation);
        Assert.Empty(await RunningOnAsync("node-1", zoneA.Name));

        await AssertStatus(StatusCode.InvalidArgument, ApplyAsync(Sleeper("bad", selector: "zone=a,,")), "node_selector");
    }

    [Fact]
    public async Task A_node_lost_with_its_agents_has_its_workloads_running_elsewhere_within_the_lease_and_a_margin_each_exactly_once()
    {
        await WaitForNodesAsync();
        var names = Enumerable.Range(0, 9).Select(i => $"w-{i}").ToList();
        var before = await RunAllAsync(names);
        var lost = before["node-2"];
        Assert.Equal(3, lost.Count);

        // The node dies with its agents: the launcher and every process it started, SIGKILLed.
        var agents = await RunningOnAsync("node-2");
        await _nodes["node-2"].Process.KillAsync();
        foreach (var agent in agents) ProcessTree.Signal(ProcFs.Identify((int)agent.Pid)!.Value, ProcessTree.SIGKILL);
        var killed = DateTime.UtcNow;

        foreach (var w in lost)
        {
            var moved = await WaitAsync(w.Name, x => x.Status.Phase == Phase.Running && x.Status.Node is "node-1" or "node-3", $"{w.Name} running elsewhere", Lease + TimeSpan.FromSeconds(15));
            Assert.True(moved.Status.Generation > w.Status.Generation);
        }
        var elapsed = DateTime.UtcNow - killed;
        Assert.True(elapsed < Lease + TimeSpan.FromSeconds(10), $"moved after {elapsed.TotalSeconds:0.0} s");
        // Each exactly once, on the node its status names; the others were not touched.
        await Task.Delay(1500);
        foreach (var name in names)
        {
            var w = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = name });
            var everywhere = new List<Instance>();
            foreach (var node in new[] { "node-1", "node-3" }) everywhere.AddRange(await RunningOnAsync(node, name));
            Assert.Equal([w.Status.InstanceId], everywhere.Select(i => i.Id));
            if (lost.All(l => l.Name != name)) Assert.Equal(before.Values.SelectMany(x => x).Single(x => x.Name == name).Status.InstanceId, w.Status.InstanceId);
        }
        var history = await Client.ListWorkloadHistoryAsync(new ListWorkloadHistoryRequest { Name = lost[0].Name });
        Assert.Contains(history.Entries, e => e.Event == "lost" && e.Detail.Contains("node node-2 lost", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_node_cut_off_past_its_lease_is_fenced_when_it_comes_back_and_no_workload_runs_twice_meanwhile_where_nodes_are_live()
    {
        await WaitForNodesAsync();
        var names = Enumerable.Range(0, 6).Select(i => $"p-{i}").ToList();
        var before = await RunAllAsync(names);
        var cut = before["node-1"];
        var stale = await RunningOnAsync("node-1");
        Assert.Equal(2, stale.Count);

        // The launcher of node-1 stops answering (SIGSTOP) past its lease; its agents keep running, as on a partition.
        var launcher = _nodes["node-1"].Process.Identity;
        ProcessTree.Signal(launcher, 19); // SIGSTOP
        try
        {
            foreach (var w in cut)
                await WaitAsync(w.Name, x => x.Status.Phase == Phase.Running && x.Status.Node != "node-1", $"{w.Name} running elsewhere", Lease + TimeSpan.FromSeconds(15));
            // Where nodes are live, each workload runs once (sampled while node-1 is cut off).
            for (var i = 0; i < 10; i++)
            {
                foreach (var name in names)
                {
                    var live = new List<Instance>();
                    foreach (var node in new[] { "node-2", "node-3" }) live.AddRange(await RunningOnAsync(node, name));
                    Assert.True(live.Count <= 1, $"{name} runs {live.Count} times on the live nodes");
                }
                await Task.Delay(100);
            }
        }
        finally
        {
            ProcessTree.Signal(launcher, 18); // SIGCONT
        }

        // Back: its instances of older generations are stopped at once (fencing), and each workload runs once in all.
        await Eventually.ValueAsync(() => RunningOnAsync("node-1"), running => running.Count == 0, Timeout, "node-1's stale instances stopped");
        // Gone, not only reported stopped (the launcher, just resumed, may reap them a moment later).
        foreach (var s in stale)
            await Eventually.ValueAsync(() => Task.FromResult(ProcFs.Identify((int)s.Pid)), p => p is null, Timeout, $"stale instance {s.Id} (pid {s.Pid}) gone");
        foreach (var name in names)
        {
            var w = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = name });
            var everywhere = new List<Instance>();
            foreach (var node in _nodes.Keys) everywhere.AddRange(await RunningOnAsync(node, name));
            Assert.Equal([w.Status.InstanceId], everywhere.Select(i => i.Id));
        }
        // It takes placements again once fenced.
        await ApplyAsync(Sleeper("after", node: "node-1"));
        var after = await WaitAsync("after", w => w.Status.Phase == Phase.Running, "a new workload on node-1");
        Assert.Equal("node-1", after.Status.Node);
    }

    public override async Task DisposeAsync()
    {
        // The workloads deleted first (their trees stopped on every node), then the nodes, then the rest.
        try
        {
            foreach (var w in (await Client.ListWorkloadsAsync(new ListWorkloadsRequest())).Workloads)
                await Client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = w.Name });
        }
        catch (RpcException)
        {
        }
        foreach (var (process, channel, client) in _nodes.Values)
        {
            if (!process.HasExited)
            {
                try
                {
                    foreach (var i in (await client.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000 })).Instances)
                        await client.StopInstanceAsync(new StopInstanceRequest { Id = i.Id, Grace = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.Zero) });
                }
                catch (RpcException)
                {
                }
            }
            await process.DisposeAsync();
            channel.Dispose();
        }
        await base.DisposeAsync();
    }
}
