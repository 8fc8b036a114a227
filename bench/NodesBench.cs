using System.Diagnostics;
using Grpc.Net.Client;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Supervisor.V1;
using Platform.Testing;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Bench;

/// <summary>
/// Three launchers as nodes (each its own process, announced in the registry) and a Supervisor placing workloads on
/// them (Release builds): 1,000 workloads applied until all run; then one node SIGKILLed with its agents, and how long
/// each of its workloads takes to run elsewhere (median and max). Options: --workloads N (1000), --lease-seconds S (10).
/// </summary>
public static class NodesBench
{
    public static async Task<int> RunAsync(string[] args)
    {
        var count = BenchOptions.Int(args, "--workloads", 1000);
        var lease = TimeSpan.FromSeconds(BenchOptions.Int(args, "--lease-seconds", 10));
        var rows = new List<(string Metric, string Others, string Ours, string Target, bool Met)>();
        var data = Directory.CreateTempSubdirectory("nodes-bench-").FullName;
        Console.WriteLine($"Nodes benchmark: {Environment.ProcessorCount} cores, {count} workloads over 3 nodes, node lease {lease.TotalSeconds:0} s");
        string Dll(string name) => AppHostProcess.ProjectOutput(typeof(NodesBench).Assembly, name);
        string Dir(string name) => Directory.CreateDirectory(Path.Combine(data, name)).FullName;
        var quiet = new Dictionary<string, string> { ["Logging__LogLevel__Default"] = "Warning" };
        var nodes = new List<ServiceProcess>();
        try
        {
            await using var registry = await ServiceProcess.StartAsync(Dll("Platform.SessionRegistry"), Dir("registry"), quiet);
            await using var monitor = await ServiceProcess.StartAsync(Dll("Platform.AgentMonitor"), Dir("monitor"), new Dictionary<string, string>(quiet)
            {
                ["services__registry__grpc__0"] = registry.GrpcUrl,
            });
            foreach (var i in new[] { 1, 2, 3 })
            {
                nodes.Add(await ServiceProcess.StartAsync(Dll("Platform.Launcher"), Dir($"node-{i}"), new Dictionary<string, string>(quiet)
                {
                    ["services__registry__grpc__0"] = registry.GrpcUrl,
                    ["Launcher__AllowArbitraryCommands"] = "true",
                    ["Launcher__RegisterNode"] = "true",
                    ["Launcher__Node"] = $"node-{i}",
                    ["Launcher__NodeLease"] = lease.ToString(),
                }));
            }
            await using var supervisor = await ServiceProcess.StartAsync(Dll("Platform.Supervisor"), Dir("supervisor"), new Dictionary<string, string>(quiet)
            {
                ["services__registry__grpc__0"] = registry.GrpcUrl,
                ["services__monitor__grpc__0"] = monitor.GrpcUrl,
                ["Supervisor__Nodes"] = "registry",
            });
            using var channel = GrpcChannel.ForAddress(supervisor.GrpcUrl);
            var client = new Supervisor.V1.Supervisor.SupervisorClient(channel);
            // The nodes take placements once the supervisor has reconciled them: one workload pinned to each first.
            foreach (var i in new[] { 1, 2, 3 })
                await client.ApplyWorkloadAsync(new ApplyWorkloadRequest { Workload = Sleeper($"probe-{i}", $"node-{i}") });
            while ((await AllAsync(client)).Count(w => w.Status.Phase == Phase.Running) < 3) await Task.Delay(50);
            foreach (var i in new[] { 1, 2, 3 }) await client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = $"probe-{i}" });

            // 1. N workloads applied (16 clients at once) until all run.
            var clock = Stopwatch.StartNew();
            var next = -1;
            await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < count)
                    await client.ApplyWorkloadAsync(new ApplyWorkloadRequest { Workload = Sleeper($"w{i:0000}", null) });
            })));
            var acknowledged = clock.Elapsed;
            List<Workload> all;
            while ((all = await AllAsync(client)).Count(w => w.Status.Phase == Phase.Running) < count && clock.Elapsed < TimeSpan.FromMinutes(5)) await Task.Delay(20);
            var running = clock.Elapsed;
            var spread = all.GroupBy(w => w.Status.Node).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}").ToList();
            rows.Add(($"{count:N0} workloads applied: all acknowledged (s)", "-", $"{acknowledged.TotalSeconds:0.00}", "-", true));
            rows.Add(($"{count:N0} workloads applied: all running (s)", "-", $"{running.TotalSeconds:0.00}", "-", all.Count(w => w.Status.Phase == Phase.Running) == count));
            rows.Add(("  spread over the nodes", "-", string.Join(", ", spread), "even (±1)", all.GroupBy(w => w.Status.Node).Select(g => g.Count()) is var sizes && sizes.Max() - sizes.Min() <= 1));

            // 2. node-2 dies with its agents (SIGKILL): each of its workloads, until it runs on another node.
            var lost = all.Where(w => w.Status.Node == "node-2").Select(w => w.Name).ToHashSet(StringComparer.Ordinal);
            using var nodeChannel = GrpcChannel.ForAddress(nodes[1].GrpcUrl);
            var agents = new List<Instance>();
            var token = "";
            do
            {
                var page = await new Launcher.V1.Launcher.LauncherClient(nodeChannel).ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000, PageToken = token });
                agents.AddRange(page.Instances);
                token = page.NextPageToken;
            } while (token.Length > 0);
            await nodes[1].KillAsync();
            var killedAt = Stopwatch.StartNew();
            foreach (var agent in agents)
                if (ProcFs.Identify((int)agent.Pid) is { } process) ProcessTree.Signal(process, ProcessTree.SIGKILL);
            var movedAfter = new Dictionary<string, double>(StringComparer.Ordinal);
            while (movedAfter.Count < lost.Count && killedAt.Elapsed < lease + TimeSpan.FromMinutes(2))
            {
                foreach (var w in await AllAsync(client))
                    if (lost.Contains(w.Name) && !movedAfter.ContainsKey(w.Name) && w.Status.Phase == Phase.Running && w.Status.Node is "node-1" or "node-3")
                        movedAfter[w.Name] = killedAt.Elapsed.TotalSeconds;
                await Task.Delay(20);
            }
            var times = movedAfter.Values.Order().ToList();
            var median = times.Count > 0 ? times[times.Count / 2] : double.NaN;
            var max = times.Count > 0 ? times[^1] : double.NaN;
            var bound = (lease + TimeSpan.FromSeconds(5)).TotalSeconds;
            rows.Add(($"node loss ({lost.Count} workloads): running elsewhere, median (s)", "-", $"{median:0.00}", $"< lease + 5 = {bound:0}", median < bound));
            rows.Add(("node loss: running elsewhere, max (s)", "-", $"{max:0.00}", $"< {bound:0}", max < bound && movedAfter.Count == lost.Count));
            // Each exactly once on the live nodes.
            var live = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var node in new[] { nodes[0], nodes[2] })
            {
                using var c = GrpcChannel.ForAddress(node.GrpcUrl);
                token = "";
                do
                {
                    var page = await new Launcher.V1.Launcher.LauncherClient(c).ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000, PageToken = token });
                    foreach (var i in page.Instances) live[i.Workload] = live.GetValueOrDefault(i.Workload) + 1;
                    token = page.NextPageToken;
                } while (token.Length > 0);
            }
            rows.Add(("  live instances per workload afterwards (min / max)", "-", $"{live.Values.Min()} / {live.Values.Max()} of {live.Count}", "1 / 1", live.Count == count && live.Values.All(v => v == 1)));
            rows.Add(("supervisor RSS with the workloads (MiB)", "-", $"{Measure.Rss(supervisor.Pid):0}", "-", true));

            foreach (var w in await AllAsync(client)) await client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = w.Name });
        }
        finally
        {
            foreach (var node in nodes) await node.DisposeAsync();
            Directory.Delete(data, recursive: true);
        }
        return Table.Print("-", rows);
    }

    private static Workload Sleeper(string name, string? node)
    {
        var w = new Workload { Name = name, Launch = new LaunchSpec { Process = new ProcessSpec { Executable = "sleep", Args = { "600" } } } };
        if (node is not null) w.Placement = new Placement { NodeName = node };
        return w;
    }

    private static Task<List<Workload>> AllAsync(Supervisor.V1.Supervisor.SupervisorClient client) => SupervisorBench.AllAsync(client);
}
