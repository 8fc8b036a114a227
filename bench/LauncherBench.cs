using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf.WellKnownTypes;
using Grpc.Net.Client;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Bench;

/// <summary>
/// The Launcher as its own process (Release build) under the loads of issue 9, beside supervisord's and PM2's
/// figures measured on this machine.
/// </summary>
public static class LauncherBench
{
    private const string Tree = "trap '' TERM; sleep 300 & setsid sleep 301 & sh -c 'sleep 302 & wait' & wait";

    public static async Task<int> RunAsync(string[] args)
    {
        // --binary PATH: measure another build, e.g. the Native AOT one
        // (dotnet publish services/Launcher -c Release -r linux-x64 -p:PublishAot=true -o out).
        var at = Array.IndexOf(args, "--binary");
        var dll = at >= 0 ? Path.GetFullPath(args[at + 1]) : AppHostProcess.ProjectOutput(typeof(LauncherBench).Assembly, "Platform.Launcher");
        var data = Directory.CreateTempSubdirectory("launcher-bench-").FullName;
        var rows = new List<(string Metric, string Others, string Ours, string Target, bool Met)>();
        Console.WriteLine($"Launcher benchmark: {Environment.ProcessorCount} cores, {dll}");
        try
        {
            await using var launcher = await ServiceProcess.StartAsync(dll, data, new Dictionary<string, string> { ["Launcher__AllowArbitraryCommands"] = "true" });
            var channels = Enumerable.Range(0, 16).Select(_ => GrpcChannel.ForAddress(launcher.GrpcUrl)).ToList();
            var clients = channels.Select(c => new Launcher.V1.Launcher.LauncherClient(c)).ToList();
            LaunchRequest Sleep(string workload) => new() { Process = new ProcessSpec { Executable = "sleep", Args = { "300" } }, Workload = workload };

            // Warm-up: JIT and connections.
            foreach (var instance in await Task.WhenAll(Enumerable.Range(0, 20).Select(i => clients[i % 8].LaunchAsync(Sleep("warm")).ResponseAsync)))
                await clients[0].StopInstanceAsync(new StopInstanceRequest { Id = instance.Id, Grace = Duration.FromTimeSpan(TimeSpan.Zero) });

            // 1. 300 sleeps running, through gRPC.
            var clock = Stopwatch.StartNew();
            var next = -1;
            var launched = new ConcurrentBag<Instance>();
            await Task.WhenAll(clients.Select(client => Task.Run(async () =>
            {
                while (Interlocked.Increment(ref next) < 300) launched.Add(await client.LaunchAsync(Sleep("throughput")));
            })));
            clock.Stop();
            var running = launched.Count(i => ProcFs.Identify((int)i.Pid) is not null);
            rows.Add(("300 x sleep running, via gRPC (s)", "supervisord 2.0, PM2 3.1", $"{clock.Elapsed.TotalSeconds:0.000}", "< 0.5", clock.Elapsed.TotalSeconds < 0.5 && running == 300));

            // 2. Memory and idle CPU while managing them.
            await Task.Delay(5000); // settle: background JIT tiering of the launch path ends
            var rss = Measure.Rss(launcher.Pid);
            var cpuBefore = Measure.Cpu(launcher.Pid);
            await Task.Delay(10_000);
            var idleCpu = (Measure.Cpu(launcher.Pid) - cpuBefore).TotalSeconds / 10.0 * 100;
            rows.Add(("RSS managing 300 instances (MiB)", "supervisord 36", $"{rss:0}", "< 70", rss < 70));
            rows.Add(("idle CPU managing 300 (% of a core)", "-", $"{idleCpu:0.00}", "< 0.5", idleCpu < 0.5));

            // 3. Exit-to-event latency over 200 exits (SIGKILL from outside, EXITED event at the watcher).
            var sample = launched.Take(200).ToList();
            var killedAt = new ConcurrentDictionary<string, long>();
            var latencies = new ConcurrentBag<double>();
            using var watchCts = new CancellationTokenSource();
            var watch = clients[0].WatchInstanceEvents(new WatchInstanceEventsRequest { Workload = "throughput" }, cancellationToken: watchCts.Token);
            await watch.ResponseHeadersAsync;
            var reader = Task.Run(async () =>
            {
                try
                {
                    while (latencies.Count < sample.Count && await watch.ResponseStream.MoveNext(watchCts.Token))
                    {
                        var e = watch.ResponseStream.Current;
                        if (e.Type == InstanceEvent.Types.Type.Exited && killedAt.TryGetValue(e.Instance.Id, out var at))
                            latencies.Add(Stopwatch.GetElapsedTime(at).TotalMilliseconds);
                    }
                }
                catch (Grpc.Core.RpcException)
                {
                }
            });
            foreach (var instance in sample)
            {
                var identity = ProcFs.Identify((int)instance.Pid)!.Value;
                killedAt[instance.Id] = Stopwatch.GetTimestamp();
                ProcessTree.Signal(identity, ProcessTree.SIGKILL);
                await Task.Delay(5);
            }
            await reader.WaitAsync(TimeSpan.FromSeconds(30));
            watchCts.Cancel();
            var sorted = latencies.Order().ToList();
            var p50 = sorted[sorted.Count / 2];
            var p99 = sorted[(int)(sorted.Count * 0.99)];
            rows.Add(("exit-to-event p50, 200 exits (ms)", "-", $"{p50:0.00}", "< 5", p50 < 5));
            rows.Add(("exit-to-event p99, 200 exits (ms)", "-", $"{p99:0.00}", "< 20", p99 < 20));
            foreach (var instance in launched.Skip(200))
                await clients[0].StopInstanceAsync(new StopInstanceRequest { Id = instance.Id, Grace = Duration.FromTimeSpan(TimeSpan.Zero) });

            // 4. Stop 20 trees (children that ignore SIGTERM and a setsid escaper) with a 500 ms grace.
            var grace = TimeSpan.FromMilliseconds(500);
            var trees = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => clients[i % 8].LaunchAsync(new LaunchRequest
            {
                Process = new ProcessSpec { Executable = "/bin/sh", Args = { "-c", Tree } },
                Workload = "trees",
                StopGrace = Duration.FromTimeSpan(grace),
            }).ResponseAsync));
            await Task.Delay(500); // let every tree grow
            var processes = trees.SelectMany(t => ProcFs.Identify((int)t.Pid) is { } root ? ProcessTree.Snapshot(root) : []).ToList();
            clock.Restart();
            await Task.WhenAll(trees.Select((t, i) => clients[i % 8].StopInstanceAsync(new StopInstanceRequest { Id = t.Id }).ResponseAsync));
            clock.Stop();
            var survivors = processes.Count(ProcFs.IsAlive);
            var overGrace = (clock.Elapsed - grace).TotalMilliseconds;
            rows.Add(($"stop 20 trees ({processes.Count} processes): survivors", "supervisord: 20 escapers left", $"{survivors}", "0", survivors == 0));
            rows.Add(("  time beyond the 500 ms grace (ms)", "-", $"{overGrace:0}", "< 100", overGrace < 100));

            foreach (var channel in channels) channel.Dispose();
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }

        return Table.Print("supervisord / PM2", rows);
    }
}
