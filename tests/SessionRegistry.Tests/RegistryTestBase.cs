using Grpc.Core;
using Platform.Registry.V1;

namespace Platform.SessionRegistry.Tests;

public abstract class RegistryTestBase : IAsyncLifetime
{
    protected static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);
    protected readonly string DataDirectory = Directory.CreateTempSubdirectory("registry-test-").FullName;
    protected RegistryHost Host = null!;
    protected Registry.V1.SessionRegistry.SessionRegistryClient Client = null!;

    protected virtual TimeProvider? Time => null;

    /// <summary>The store: SQLite in the data directory, or, overridden, a PostgreSQL database of the test's own on the
    /// tests' private server (the same tests run against both stores).</summary>
    protected virtual bool OnPostgres => false;

    protected virtual void Configure(RegistryOptions options)
    {
    }

    public virtual async Task InitializeAsync()
    {
        if (OnPostgres)
            RegistryHost.PostgresStores[DataDirectory] = await (await Testing.PostgresServer.SharedAsync()).CreateDatabaseAsync("registry");
        Host = await RegistryHost.StartAsync(DataDirectory, Time, Configure);
        Client = Host.NewClient();
    }

    public virtual async Task DisposeAsync()
    {
        await Host.DisposeAsync();
        RegistryHost.PostgresStores.TryRemove(DataDirectory, out _);
        try { Directory.Delete(DataDirectory, recursive: true); } catch (IOException) { }
    }

    protected Task<Session> RegisterAsync(string workload, string instance, string requestId = "", TimeSpan? ttl = null, IDictionary<string, string>? labels = null)
    {
        var request = new RegisterSessionRequest { Workload = workload, Instance = instance, RequestId = requestId, Node = "node-1", Pid = 42 };
        if (ttl is { } t) request.Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(t);
        if (labels is not null) request.Labels.Add(labels);
        return Client.RegisterSessionAsync(request).ResponseAsync;
    }

    /// <summary>Reads the next <paramref name="count"/> events of a watch stream, within the timeout.</summary>
    protected static async Task<List<SessionEvent>> ReadEventsAsync(IAsyncStreamReader<SessionEvent> stream, int count)
    {
        using var cts = new CancellationTokenSource(Timeout);
        var events = new List<SessionEvent>();
        while (events.Count < count && await stream.MoveNext(cts.Token)) events.Add(stream.Current);
        return events;
    }

    protected AsyncServerStreamingCall<SessionEvent> Watch(long fromRevision = 0, string workload = "") =>
        Client.WatchSessions(new WatchSessionsRequest { FromRevision = fromRevision, Workload = workload });

    /// <summary>Starts a watch and waits until the server has subscribed it (response headers).</summary>
    protected async Task<AsyncServerStreamingCall<SessionEvent>> WatchFromNowAsync(string workload = "")
    {
        var call = Watch(0, workload);
        await call.ResponseHeadersAsync;
        return call;
    }
}
