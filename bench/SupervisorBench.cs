using System.Diagnostics;
using Google.Protobuf.WellKnownTypes;
using Grpc.Net.Client;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Supervisor.V1;
using Platform.Testing;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Bench;

/// <summary>
/// The Supervisor with the registry, launcher and monitor, each its own process (Release builds): crash-to-running
/// latency with zero backoff, and 1,000 workloads reconciled after a SIGKILL of the supervisor.
/// </summary>
public static class SupervisorBench
{
    public static async Task<int> RunAsync(string[] args)
    {
        // Optional: "latency" runs only the crash-to-running part.
        var rows = new List<(string Metric, string Others, string Ours, string Target, bool Met)>();
        var data = Directory.CreateTempSubdirectory("supervisor-bench-").FullName;
        Console.WriteLine($"Supervisor benchmark: {Environment.ProcessorCount} cores");
        string Dll(string name) => AppHostProcess.ProjectOutput(typeof(SupervisorBench).Assembly, name);
        Directory.CreateDirectory(Path.Combine(data, "registry"));
        Directory.CreateDirectory(Path.Combine(data, "launcher"));
        Directory.CreateDirectory(Path.Combine(data, "monitor"));
        Directory.CreateDirectory(Path.Combine(data, "supervisor"));
        Directory.CreateDirectory(Path.Combine(data, "supervisor-unarmed"));
        var quiet = new Dictionary<string, string> { ["Logging__LogLevel__Default"] = "Warning" };
        try
        {
            await using var registry = await ServiceProcess.StartAsync(Dll("Platform.SessionRegistry"), Path.Combine(data, "registry"), quiet);
            await using var launcher = await ServiceProcess.StartAsync(Dll("Platform.Launcher"), Path.Combine(data, "launcher"), new Dictionary<string, string>(quiet)
            {
                ["services__registry__grpc__0"] = registry.GrpcUrl,
                ["Launcher__AllowArbitraryCommands"] = "true",
                ["Launcher__RegisterSessionBeforeStart"] = args.Contains("no-session-before-start") ? "false" : "true",
            });
            await using var monitor = await ServiceProcess.StartAsync(Dll("Platform.AgentMonitor"), Path.Combine(data, "monitor"), new Dictionary<string, string>(quiet)
            {
                ["services__registry__grpc__0"] = registry.GrpcUrl,
            });
            var supervisorEnv = new Dictionary<string, string>
            {
                ["services__registry__grpc__0"] = registry.GrpcUrl,
                ["services__launcher__grpc__0"] = launcher.GrpcUrl,
                ["services__monitor__grpc__0"] = monitor.GrpcUrl,
                ["Logging__LogLevel__Default"] = "Warning",
                ["Logging__LogLevel__Platform.Supervisor.SupervisorEngine"] = "Information",
            };
            // Both supervisors (the first is SIGKILLed half-way) are disposed however the run ends: nothing left behind.
            await using var supervisor = await ServiceProcess.StartAsync(Dll("Platform.Supervisor"), Path.Combine(data, "supervisor"), supervisorEnv);
            // 1. Crash-to-running with zero backoff: SIGKILL of the instance -> the launcher's STARTED of the next
            //    (its timestamp is taken when posix_spawn has returned, i.e. after the new process's exec).
            //    Settled: each crash hits a workload whose previous restart is fully handled (the supervisor has
            //    recorded it and armed the next generation), 20 ms later. Back to back: 20 ms after the previous
            //    STARTED, whatever is still in flight. Not armed: a supervisor with Supervisor:ArmSuccessors=false,
            //    every restart through it (the path of any non-zero backoff).
            using var launcherChannel = GrpcChannel.ForAddress(launcher.GrpcUrl);
            var launcherClient = new Launcher.V1.Launcher.LauncherClient(launcherChannel);
            var channel = GrpcChannel.ForAddress(supervisor.GrpcUrl);
            var client = new Supervisor.V1.Supervisor.SupervisorClient(channel);
            await CrashLoopAsync(client, launcherClient, settle: true); // warm-up: the services' code paths reach their final JIT tier
            var settled = await CrashLoopAsync(client, launcherClient, settle: true);
            var backToBack = await CrashLoopAsync(client, launcherClient, settle: false);
            Crashes unarmed;
            await using (var plain = await ServiceProcess.StartAsync(Dll("Platform.Supervisor"), Path.Combine(data, "supervisor-unarmed"),
                new Dictionary<string, string>(supervisorEnv) { ["Supervisor__ArmSuccessors"] = "false" }))
            {
                using var plainChannel = GrpcChannel.ForAddress(plain.GrpcUrl);
                unarmed = await CrashLoopAsync(new Supervisor.V1.Supervisor.SupervisorClient(plainChannel), launcherClient, settle: false);
            }
            rows.Add(("crash -> running again, zero backoff: p50 (ms, 200 crashes)", "PM2 7.7, supervisord 1,010", $"{settled.P50:0.00}", "< 4", settled.P50 < 4));
            rows.Add(("crash -> running again, zero backoff: p99 (ms)", "-", $"{settled.P99:0.00}", "< 10", settled.P99 < 10));
            rows.Add(("  of which SIGKILL -> launcher sees the exit: p50 / p99 (ms)", "-", $"{settled.ExitP50:0.00} / {settled.ExitP99:0.00}", "-", true));
            rows.Add(("  until the bench hears STARTED: p50 / p99 (ms)", "-", $"{settled.HeardP50:0.0} / {settled.HeardP99:0.0}", "-", true));
            rows.Add(("  crashes back to back (20 ms after each start): p50 / p99 (ms)", "-", $"{backToBack.P50:0.00} / {backToBack.P99:0.00}", "-", true));
            rows.Add(("  not armed (every restart through the supervisor): p50 / p99 (ms)", "-", $"{unarmed.P50:0.00} / {unarmed.P99:0.00}", "-", true));
            rows.Add(("  a unary call to the launcher at rest, p50 (ms)", "-", $"{settled.RttP50:0.00}", "-", true));

            if (args.Contains("latency")) return Table.Print("PM2 / supervisord", rows);

            // 2. 1,000 supervised workloads, then the supervisor SIGKILLed and started again.
            var clock = Stopwatch.StartNew();
            var next = -1;
            await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < 1000)
                    await client.ApplyWorkloadAsync(new ApplyWorkloadRequest
                    {
                        Workload = new Workload { Name = $"w{i:0000}", Launch = new LaunchSpec { Process = new ProcessSpec { Executable = "sleep", Args = { "600" } } } },
                    });
            })));
            var applied = clock.Elapsed;
            await Task.Delay(5000);
            var rss = Measure.Rss(supervisor.Pid);
            var before = await AllAsync(client);
            var instancesBefore = before.ToDictionary(w => w.Name, w => w.Status.InstanceId);

            await supervisor.KillAsync();
            clock.Restart();
            await using var restarted = await ServiceProcess.StartAsync(Dll("Platform.Supervisor"), Path.Combine(data, "supervisor"), supervisorEnv);
            var serving = clock.Elapsed;
            while (!restarted.Output.Contains("Reconciled 1000 workloads", StringComparison.Ordinal) && clock.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(5);
            var reconciled = clock.Elapsed;
            channel.Dispose();
            channel = GrpcChannel.ForAddress(restarted.GrpcUrl);
            client = new Supervisor.V1.Supervisor.SupervisorClient(channel);
            await Task.Delay(3000);
            var after = await AllAsync(client);
            var same = after.Count(w => w.Status.Phase == Phase.Running && instancesBefore.GetValueOrDefault(w.Name) == w.Status.InstanceId);
            var running = 0;
            var token = "";
            do
            {
                var page = await launcherClient.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000, PageToken = token });
                running += page.Instances.Count(i => i.Labels.ContainsKey("platform.supervisor/workload"));
                token = page.NextPageToken;
            } while (token.Length > 0);
            rows.Add(("1,000 workloads applied and running (s)", "-", $"{applied.TotalSeconds:0.00}", "-", true));
            rows.Add(("supervisor RSS with 1,000 workloads (MiB)", "-", $"{rss:0}", "< 150", rss < 150));
            rows.Add(("after SIGKILL: start to all 1,000 reconciled (s)", "-", $"{reconciled.TotalSeconds:0.00}", "< 5", reconciled.TotalSeconds < 5 && same == 1000));
            rows.Add(("  of which process start to SERVING (s)", "-", $"{serving.TotalSeconds:0.00}", "-", true));
            rows.Add(("  workloads adopted with their instance / live instances", "-", $"{same}/{running}", "1000/1000", same == 1000 && running == 1000));

            foreach (var w in after) await client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = w.Name });
            channel.Dispose();
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }

        return Table.Print("PM2 / supervisord", rows);
    }

    private sealed record Crashes(double P50, double P99, double ExitP50, double ExitP99, double HeardP50, double HeardP99, double RttP50);

    /// <summary>230 SIGKILLs of a zero-backoff workload (the first 30 warm up); each latency is SIGKILL to the
    /// launcher's STARTED of the next instance.</summary>
    private static async Task<Crashes> CrashLoopAsync(Supervisor.V1.Supervisor.SupervisorClient client, Launcher.V1.Launcher.LauncherClient launcherClient, bool settle)
    {
        using var events = launcherClient.WatchInstanceEvents(new WatchInstanceEventsRequest { Workload = "crasher" });
        await events.ResponseHeadersAsync;
        var started = System.Threading.Channels.Channel.CreateUnbounded<InstanceEvent>();
        var exits = System.Threading.Channels.Channel.CreateUnbounded<InstanceEvent>();
        var pump = Task.Run(async () =>
        {
            try
            {
                while (await events.ResponseStream.MoveNext(CancellationToken.None))
                    if (events.ResponseStream.Current.Type == InstanceEvent.Types.Type.Started) started.Writer.TryWrite(events.ResponseStream.Current);
                    else if (events.ResponseStream.Current.Type == InstanceEvent.Types.Type.Exited) exits.Writer.TryWrite(events.ResponseStream.Current);
            }
            catch (Grpc.Core.RpcException)
            {
            }
        });
        await client.ApplyWorkloadAsync(new ApplyWorkloadRequest
        {
            Workload = new Workload
            {
                Name = "crasher",
                Launch = new LaunchSpec { Process = new ProcessSpec { Executable = "sleep", Args = { "300" } } },
                RestartPolicy = new RestartPolicy
                {
                    InitialBackoff = Duration.FromTimeSpan(TimeSpan.Zero),
                    MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
                    MaxRestarts = 100_000,
                },
            },
        });
        var current = await started.Reader.ReadAsync();
        List<double> latencies = [], heard = [], exitSeen = [], rtts = [];
        for (var i = 0; i < 230; i++)
        {
            var identity = ProcFs.Identify((int)current.Instance.Pid)!.Value;
            if (settle)
                while (!(await launcherClient.GetInstanceAsync(new GetInstanceRequest { Id = current.Instance.Id })).SuccessorArmed) await Task.Delay(5);
            await Task.Delay(20);
            var rtt = Stopwatch.StartNew();
            await launcherClient.GetInstanceAsync(new GetInstanceRequest { Id = current.Instance.Id });
            rtts.Add(rtt.Elapsed.TotalMilliseconds);
            var killedAt = DateTime.UtcNow;
            ProcessTree.Signal(identity, ProcessTree.SIGKILL);
            current = await started.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            var exited = await exits.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            if (i < 30) continue; // warm-up
            latencies.Add((current.Instance.StartTime.ToDateTime() - killedAt).TotalMilliseconds);
            heard.Add((DateTime.UtcNow - killedAt).TotalMilliseconds);
            exitSeen.Add((exited.Instance.ExitTime.ToDateTime() - killedAt).TotalMilliseconds);
        }
        await client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = "crasher" });
        events.Dispose();
        await pump;
        static double P(List<double> values, double q)
        {
            values.Sort();
            return values[Math.Min(values.Count - 1, (int)(values.Count * q))];
        }
        return new Crashes(P(latencies, 0.5), P(latencies, 0.99), P(exitSeen, 0.5), P(exitSeen, 0.99), P(heard, 0.5), P(heard, 0.99), P(rtts, 0.5));
    }

    /// <summary>Every workload, a page at a time.</summary>
    internal static async Task<List<Workload>> AllAsync(Supervisor.V1.Supervisor.SupervisorClient client)
    {
        var all = new List<Workload>();
        var token = "";
        do
        {
            var page = await client.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000, PageToken = token });
            all.AddRange(page.Workloads);
            token = page.NextPageToken;
        } while (token.Length > 0);
        return all;
    }
}
