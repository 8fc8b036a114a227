using System.Diagnostics;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;
using Platform.Registry.V1;
using Platform.Testing;

namespace Platform.Bench;

/// <summary>
/// The SessionRegistry as its own process (Release build, fresh SQLite file) under the loads, beside the
/// etcd 3.4 figures measured on this machine with 32 .NET gRPC clients (issue 8). With <c>--store postgres</c>: two
/// replicas on one database of a private PostgreSQL server (Debian's, as the tests start it), the clients spread over
/// both, and the watchers too (half of them see the writer's changes through the other replica).
/// </summary>
public static class RegistryBench
{
    private const int Clients = 32;

    public static async Task<int> RunAsync(string[] args)
    {
        var seconds = args.Length > 1 && args[0] == "--seconds" ? double.Parse(args[1]) : 5;
        // --registry PATH: another build of the registry (a Native AOT binary, say); default the Release build.
        var dll = BenchOptions.Text(args, "--registry") ?? AppHostProcess.ProjectOutput(typeof(RegistryBench).Assembly, "Platform.SessionRegistry");
        var rows = new List<(string Metric, string Etcd, string Ours, string Target, bool Met)>();
        var postgres = BenchOptions.Text(args, "--store") == "postgres";
        var replicas = postgres ? 2 : 1;
        var store = postgres ? "2 replicas on PostgreSQL" : "SQLite";
        Console.WriteLine($"SessionRegistry benchmark: {Clients} clients, {seconds:0.#} s per load, {Environment.ProcessorCount} cores, {store}, {dll}");
        async Task WithRegistryAsync(string dll, Func<ServiceProcess, List<GrpcChannel>, List<Registry.V1.SessionRegistry.SessionRegistryClient>, Task> body) =>
            await RegistryBench.WithRegistryAsync(dll, replicas, postgres ? await (await PostgresServer.SharedAsync()).CreateDatabaseAsync("bench") : null, body);

        if (!args.Contains("--memory-only"))
        {
            await WithRegistryAsync(dll, async (registry, channels, clients) =>
            {
                // Warm-up (JIT, connections).
                await RunForAsync(TimeSpan.FromSeconds(5), clients, (c, w, n) => c.RegisterSessionAsync(Register($"warm-{w}-{n}")).ResponseAsync);
                var duration = TimeSpan.FromSeconds(seconds);

                var cpuBefore = Measure.Cpu(registry.Pid);
                var registers = await RunForAsync(duration, clients, (c, w, n) => c.RegisterSessionAsync(Register($"reg-{w}-{n}")).ResponseAsync);
                var cpuPerRegister = (Measure.Cpu(registry.Pid) - cpuBefore).TotalMicroseconds / (registers * duration.TotalSeconds);
                rows.Add(($"RegisterSession, durable, {store} (per s)", "1,817", $"{registers:N0}", ">= 5,000", registers >= 5000));
                rows.Add((replicas > 1 ? "  CPU per registration, first replica (us)" : "  registry CPU per registration (us)", "-", $"{cpuPerRegister:0}", "-", true));
                if (args.Contains("--register-only")) return;

                var ids = (await clients[0].ListSessionsAsync(new ListSessionsRequest { PageSize = 1000 })).Sessions.Select(s => s.Id).ToList();
                var heartbeats = await RunForAsync(duration, clients, (c, w, n) => c.HeartbeatAsync(new HeartbeatRequest { Ids = { ids[(w * 31 + n) % ids.Count] } }).ResponseAsync);
                rows.Add(("Heartbeat, unary calls (per s)", "-", $"{heartbeats:N0}", ">= 5,000", heartbeats >= 5000));

                var renewals = await KeepAliveAsync(duration, clients, ids);
                rows.Add(("KeepAlive renewals, sessions (per s)", "24,083", $"{renewals:N0}", ">= 50,000", renewals >= 50000));

                var (p50, p99) = await WatchFanOutAsync(channels, clients[0], watchers: 100, changes: 300);
                var across = replicas > 1 ? ", half across replicas" : "";
                rows.Add(($"Watch delay p50, 100 watchers{across} (ms)", "-", $"{p50:0.00}", "-", true));
                rows.Add(($"Watch delay p99, 100 watchers{across} (ms)", "8.4", $"{p99:0.00}", "< 10", p99 < 10));
            });
        }

        // Memory in a registry of its own, so the other loads' buffers do not count (SQLite only: the figure is the
        // registry's memory with its store in the process).
        if (!args.Contains("--register-only") && !postgres) await WithRegistryAsync(dll, async (registry, _, clients) =>
        {
            var sessions = args.Length > 0 && Array.IndexOf(args, "--sessions") is var at and >= 0 ? int.Parse(args[at + 1]) : 100_000;
            var (idle, rss) = await MemoryAsync(registry, clients, sessions);
            if (BenchOptions.Int(args, "--hold-seconds", 0) is > 0 and var hold)
            {
                // Time to look inside (dotnet-gcdump, /proc/PID/smaps) before the registry goes.
                Console.WriteLine($"registry pid {registry.Pid} held for {hold} s");
                await Task.Delay(TimeSpan.FromSeconds(hold));
            }
            rows.Add(("RSS, empty registry (MiB)", "-", $"{idle:0}", "-", true));
            rows.Add(("RSS with 100,000 live sessions (MiB)", "122 (100k keys)", $"{rss:0}", "< 150", rss < 150));
        });

        return Table.Print("etcd 3.4", rows);
    }

    /// <summary>Starts <paramref name="replicas"/> registries (on <paramref name="postgres"/> when given, else each on
    /// SQLite), one channel per client, spread over them in turn; the body gets the first registry.</summary>
    private static async Task WithRegistryAsync(string dll, int replicas, string? postgres,
        Func<ServiceProcess, List<GrpcChannel>, List<Registry.V1.SessionRegistry.SessionRegistryClient>, Task> body)
    {
        var data = Enumerable.Range(0, replicas).Select(_ => Directory.CreateTempSubdirectory("registry-bench-").FullName).ToList();
        var environment = new Dictionary<string, string> { ["Logging__LogLevel__Default"] = "Warning" };
        if (postgres is not null) environment["ConnectionStrings__registry-store"] = postgres;
        var registries = new List<ServiceProcess>();
        try
        {
            foreach (var directory in data) registries.Add(await ServiceProcess.StartAsync(dll, directory, environment));
            var channels = Enumerable.Range(0, Clients).Select(i => GrpcChannel.ForAddress(registries[i % registries.Count].GrpcUrl)).ToList();
            try
            {
                await body(registries[0], channels, channels.Select(c => new Registry.V1.SessionRegistry.SessionRegistryClient(c)).ToList());
            }
            finally
            {
                foreach (var channel in channels) channel.Dispose();
            }
        }
        finally
        {
            foreach (var registry in registries) await registry.DisposeAsync();
            foreach (var directory in data) Directory.Delete(directory, recursive: true);
        }
    }

    private static RegisterSessionRequest Register(string instance) =>
        new() { Workload = "bench", Instance = instance, Node = "bench-node", Pid = 1, Ttl = Duration.FromTimeSpan(TimeSpan.FromHours(1)) };

    /// <summary>Each client calls in a loop for the duration; returns completed calls per second.</summary>
    private static async Task<double> RunForAsync<T>(TimeSpan duration, List<Registry.V1.SessionRegistry.SessionRegistryClient> clients,
        Func<Registry.V1.SessionRegistry.SessionRegistryClient, int, int, Task<T>> call)
    {
        var clock = Stopwatch.StartNew();
        var counts = await Task.WhenAll(clients.Select((client, worker) => Task.Run(async () =>
        {
            var n = 0;
            while (clock.Elapsed < duration) await call(client, worker, n++);
            return n;
        })));
        return counts.Sum() / clock.Elapsed.TotalSeconds;
    }

    private static async Task<double> KeepAliveAsync(TimeSpan duration, List<Registry.V1.SessionRegistry.SessionRegistryClient> clients, List<string> ids)
    {
        var batch = new KeepAliveRequest { Ids = { ids } };
        var clock = Stopwatch.StartNew();
        var renewed = await Task.WhenAll(clients.Select(client => Task.Run(async () =>
        {
            using var stream = client.KeepAlive();
            long count = 0;
            while (clock.Elapsed < duration)
            {
                await stream.RequestStream.WriteAsync(batch);
                if (!await stream.ResponseStream.MoveNext(CancellationToken.None)) break;
                count += stream.ResponseStream.Current.RenewedIds.Count;
            }
            await stream.RequestStream.CompleteAsync();
            return count;
        })));
        return renewed.Sum() / clock.Elapsed.TotalSeconds;
    }

    /// <summary>Time from the writer's acknowledgement to each watcher's receipt of the event.</summary>
    private static async Task<(double P50, double P99)> WatchFanOutAsync(List<GrpcChannel> channels,
        Registry.V1.SessionRegistry.SessionRegistryClient writer, int watchers, int changes)
    {
        var received = new long[watchers, changes];
        var acked = new long[changes];
        using var cts = new CancellationTokenSource();
        var ready = new List<Task>();
        var readers = new List<Task>();
        long start = 0;
        for (var w = 0; w < watchers; w++)
        {
            var client = new Registry.V1.SessionRegistry.SessionRegistryClient(channels[w % channels.Count]);
            var call = client.WatchSessions(new WatchSessionsRequest { Workload = "watch" }, cancellationToken: cts.Token);
            ready.Add(call.ResponseHeadersAsync);
            var index = w;
            readers.Add(Task.Run(async () =>
            {
                for (var i = 0; i < changes && await call.ResponseStream.MoveNext(cts.Token); i++)
                    received[index, i] = Stopwatch.GetTimestamp();
                call.Dispose();
            }));
        }
        await Task.WhenAll(ready);

        for (var i = 0; i < changes; i++)
        {
            await writer.RegisterSessionAsync(new RegisterSessionRequest { Workload = "watch", Instance = $"{i}", Ttl = Duration.FromTimeSpan(TimeSpan.FromHours(1)) });
            acked[i] = Stopwatch.GetTimestamp();
            await Task.Delay(2); // a steady stream of changes, not one burst
        }
        await Task.WhenAll(readers).WaitAsync(TimeSpan.FromSeconds(30));
        _ = start;

        var delays = new List<double>(watchers * changes);
        for (var w = 0; w < watchers; w++)
            for (var i = 0; i < changes; i++)
                delays.Add(Math.Max(0, Stopwatch.GetElapsedTime(acked[i], received[w, i]).TotalMilliseconds));
        delays.Sort();
        return (delays[delays.Count / 2], delays[(int)(delays.Count * 0.99)]);
    }

    /// <summary>Registers live sessions up to <paramref name="sessions"/>, then reads the registry's RSS.</summary>
    private static async Task<(double Idle, double Loaded)> MemoryAsync(ServiceProcess registry, List<Registry.V1.SessionRegistry.SessionRegistryClient> clients, int sessions)
    {
        await Task.Delay(1000);
        var idle = Measure.Rss(registry.Pid);
        var remaining = sessions;
        var next = -1;
        await Task.WhenAll(clients.Select(client => Task.Run(async () =>
        {
            int n;
            while ((n = Interlocked.Increment(ref next)) < remaining)
                await client.RegisterSessionAsync(Register($"mem-{n}"));
        })));
        var live = await clients[0].ListSessionsAsync(new ListSessionsRequest { Workload = "bench", State = Session.Types.State.Active, PageSize = 1 });
        if (live.Sessions.Count == 0) throw new InvalidOperationException("no live sessions after the load");
        await Task.Delay(7000); // idle: the registry trims its heap after a burst (ServiceDefaults' IdleMemoryTrimmer, which looks every 2 s)
        return (idle, Measure.Rss(registry.Pid));
    }
}
