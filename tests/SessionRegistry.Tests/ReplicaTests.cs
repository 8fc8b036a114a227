using System.Collections.Concurrent;
using Grpc.Core;
using Platform.Registry.V1;
using Platform.Testing;

namespace Platform.SessionRegistry.Tests;

/// <summary>Two registry replicas on one PostgreSQL database, each a real registry on its own port.</summary>
public sealed class ReplicaTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly string _a = Directory.CreateTempSubdirectory("registry-replica-a-").FullName;
    private readonly string _b = Directory.CreateTempSubdirectory("registry-replica-b-").FullName;
    private RegistryHost _hostA = null!, _hostB = null!;
    private Registry.V1.SessionRegistry.SessionRegistryClient _clientA = null!, _clientB = null!;

    public async Task InitializeAsync()
    {
        var database = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync("replicas");
        RegistryHost.PostgresStores[_a] = database;
        RegistryHost.PostgresStores[_b] = database;
        _hostA = await RegistryHost.StartAsync(_a, configure: o => o.LeaderLease = TimeSpan.FromSeconds(3));
        _hostB = await RegistryHost.StartAsync(_b, configure: o => o.LeaderLease = TimeSpan.FromSeconds(3));
        (_clientA, _clientB) = (_hostA.NewClient(), _hostB.NewClient());
    }

    [Fact]
    public async Task Concurrent_registrations_on_both_replicas_give_one_live_session_per_key_and_both_watches_see_every_change_once_in_order()
    {
        using var watchA = _clientA.WatchSessions(new WatchSessionsRequest());
        using var watchB = _clientB.WatchSessions(new WatchSessionsRequest());
        await watchA.ResponseHeadersAsync;
        await watchB.ResponseHeadersAsync;

        // 16 writers, half on each replica, racing for 40 keys (each registered 8 times), and 320 keys of their own.
        var answers = new ConcurrentBag<(string Key, string Id)>();
        await Task.WhenAll(Enumerable.Range(0, 16).Select(w => Task.Run(async () =>
        {
            var client = w % 2 == 0 ? _clientA : _clientB;
            for (var i = 0; i < 20; i++)
            {
                var contested = $"shared-{(w / 2 * 5 + i) % 40}";
                foreach (var instance in new[] { contested, $"own-{w}-{i}" })
                {
                    var session = await client.RegisterSessionAsync(new RegisterSessionRequest { Workload = "race", Instance = instance });
                    answers.Add((instance, session.Id));
                }
            }
        })));

        // One session per key, whichever replica was asked.
        var byKey = answers.GroupBy(a => a.Key).ToDictionary(g => g.Key, g => g.Select(a => a.Id).Distinct().ToList());
        Assert.Equal(360, byKey.Count);
        Assert.All(byKey, k => Assert.True(k.Value.Count == 1, $"{k.Key} got {k.Value.Count} sessions"));
        foreach (var client in new[] { _clientA, _clientB })
        {
            var listed = await client.ListSessionsAsync(new ListSessionsRequest { Workload = "race", State = Session.Types.State.Active, PageSize = 1000 });
            Assert.Equal(360, listed.Sessions.Count);
            Assert.Equal(360, listed.Sessions.Select(s => (s.Workload, s.Instance)).Distinct().Count());
        }

        // Each replica's watcher: the 360 creations, revisions 1..360 without a gap, the same on both.
        var seenA = await ReadAsync(watchA, 360);
        var seenB = await ReadAsync(watchB, 360);
        Assert.Equal(Enumerable.Range(1, 360).Select(r => (long)r), seenA.Select(e => e.Revision));
        Assert.Equal(seenA.Select(e => (e.Revision, e.Session.Id)), seenB.Select(e => (e.Revision, e.Session.Id)));
        Assert.All(seenA, e => Assert.Equal(SessionEvent.Types.Type.Created, e.Type));
        Assert.Equal(byKey.Values.Select(ids => ids[0]).Order(), seenA.Select(e => e.Session.Id).Order());

        // An end on one replica is seen on the other, and the key is free again there.
        var shared = byKey["shared-0"][0];
        await _clientB.EndSessionAsync(new EndSessionRequest { Id = shared, Reason = "done" });
        Assert.Equal(Session.Types.State.Ended, (await _clientA.GetSessionAsync(new GetSessionRequest { Id = shared })).State);
        var ended = Assert.Single(await ReadAsync(watchA, 1));
        Assert.Equal((361L, SessionEvent.Types.Type.Ended), (ended.Revision, ended.Type));
        var again = await _clientA.RegisterSessionAsync(new RegisterSessionRequest { Workload = "race", Instance = "shared-0" });
        Assert.NotEqual(shared, again.Id);
    }

    [Fact]
    public async Task A_lease_renewed_only_on_the_replica_that_does_not_sweep_keeps_its_session_alive_and_expires_once_it_stops()
    {
        // One of the two sweeps (the leader lock); the other only renews.
        await Eventually.ValueAsync(() => Task.FromResult(_hostA.Sweeper.IsLeader || _hostB.Sweeper.IsLeader), l => l, Timeout, "a sweeper leader");
        Assert.False(_hostA.Sweeper.IsLeader && _hostB.Sweeper.IsLeader);
        var (sweeping, renewing) = _hostA.Sweeper.IsLeader ? (_clientA, _clientB) : (_clientB, _clientA);

        var session = await sweeping.RegisterSessionAsync(new RegisterSessionRequest
        {
            Workload = "lease", Instance = "0", Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
        });
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(4);
        while (DateTime.UtcNow < until)
        {
            var renewal = await renewing.HeartbeatAsync(new HeartbeatRequest { Ids = { session.Id } });
            Assert.Equal([session.Id], renewal.RenewedIds);
            await Task.Delay(300);
        }
        Assert.Equal(Session.Types.State.Active, (await sweeping.GetSessionAsync(new GetSessionRequest { Id = session.Id })).State);

        // No more renewals: expired by the sweeping replica, seen on both.
        var stoppedAt = DateTime.UtcNow;
        var expired = await Eventually.ValueAsync(() => renewing.GetSessionAsync(new GetSessionRequest { Id = session.Id }).ResponseAsync,
            s => s.State == Session.Types.State.Expired, Timeout, "the session to expire");
        Assert.True(DateTime.UtcNow - stoppedAt < TimeSpan.FromSeconds(5), $"expired {(DateTime.UtcNow - stoppedAt).TotalSeconds:0.0} s after the last renewal");
        Assert.Equal("lease expired", expired.EndReason);
        Assert.Equal(Session.Types.State.Expired, (await sweeping.GetSessionAsync(new GetSessionRequest { Id = session.Id })).State);
    }

    private static async Task<List<SessionEvent>> ReadAsync(AsyncServerStreamingCall<SessionEvent> call, int count)
    {
        using var cts = new CancellationTokenSource(Timeout);
        var events = new List<SessionEvent>();
        while (events.Count < count && await call.ResponseStream.MoveNext(cts.Token)) events.Add(call.ResponseStream.Current);
        return events;
    }

    public async Task DisposeAsync()
    {
        await _hostA.DisposeAsync();
        await _hostB.DisposeAsync();
        RegistryHost.PostgresStores.TryRemove(_a, out _);
        RegistryHost.PostgresStores.TryRemove(_b, out _);
        foreach (var dir in new[] { _a, _b })
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
    }
}
