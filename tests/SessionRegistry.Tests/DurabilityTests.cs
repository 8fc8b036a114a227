using System.Collections.Concurrent;
using Grpc.Core;
using Grpc.Net.Client;
using Platform.Registry.V1;
using Platform.Testing;

namespace Platform.SessionRegistry.Tests;

/// <summary>The registry as its own process, SIGKILLed in the middle of a load.</summary>
public sealed class DurabilityTests : IAsyncLifetime
{
    private readonly string _dataDirectory = Directory.CreateTempSubdirectory("registry-kill-").FullName;
    private static string RegistryDll => typeof(RegistryEngine).Assembly.Location;

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgres")]
    public async Task Every_acknowledged_registration_is_there_after_a_SIGKILL_mid_load(string store)
    {
        var environment = new Dictionary<string, string>();
        if (store == "postgres")
            environment[$"ConnectionStrings__{Extensions.StoreConnectionName}"] = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync("durability");
        var acknowledged = new ConcurrentBag<string>();
        await using (var registry = await ServiceProcess.StartAsync(RegistryDll, _dataDirectory, environment))
        {
            var channels = Enumerable.Range(0, 8).Select(_ => GrpcChannel.ForAddress(registry.GrpcUrl)).ToList();
            using var stop = new CancellationTokenSource();
            var workers = Enumerable.Range(0, 32).Select(worker => Task.Run(async () =>
            {
                var client = new Registry.V1.SessionRegistry.SessionRegistryClient(channels[worker % channels.Count]);
                for (var n = 0; !stop.IsCancellationRequested; n++)
                {
                    try
                    {
                        var session = await client.RegisterSessionAsync(new RegisterSessionRequest { Workload = "load", Instance = $"{worker}-{n}", Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMinutes(10)) });
                        acknowledged.Add(session.Id);
                    }
                    catch (RpcException)
                    {
                        return; // the registry is gone
                    }
                }
            })).ToList();

            while (acknowledged.Count < 2000) await Task.Delay(10);
            await registry.KillAsync(); // mid-load: calls are in flight
            await stop.CancelAsync();
            await Task.WhenAll(workers);
            foreach (var channel in channels) channel.Dispose();
        }

        await using var restarted = await ServiceProcess.StartAsync(RegistryDll, _dataDirectory, environment);
        using var readChannel = GrpcChannel.ForAddress(restarted.GrpcUrl);
        var reader = new Registry.V1.SessionRegistry.SessionRegistryClient(readChannel);
        var stored = new HashSet<string>();
        var token = "";
        do
        {
            var page = await reader.ListSessionsAsync(new ListSessionsRequest { Workload = "load", PageSize = 1000, PageToken = token });
            foreach (var session in page.Sessions)
            {
                Assert.Equal(Session.Types.State.Active, session.State);
                stored.Add(session.Id);
            }
            token = page.NextPageToken;
        } while (token.Length > 0);

        // On the store it was given: SQLite's file in the data directory, or none of it.
        Assert.Equal(store == "sqlite", File.Exists(Path.Combine(_dataDirectory, "registry.db")));
        var lost = acknowledged.Where(id => !stored.Contains(id)).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} of {acknowledged.Count} acknowledged registrations were lost");
        Assert.True(stored.Count >= acknowledged.Count);
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        try { Directory.Delete(_dataDirectory, recursive: true); } catch (IOException) { }
        return Task.CompletedTask;
    }
}
