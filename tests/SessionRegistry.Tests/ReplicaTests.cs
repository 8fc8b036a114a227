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
            Assert.True(renewal.RenewedIds.SequenceEqual([session.Id]), $"renewal {renewal} at {DateTime.UtcNow:O}, registered {session.CreateTime}");
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

    [Fact]
    public async Task Each_replica_SIGKILLed_once_under_concurrent_writers_loses_no_acknowledged_write_and_the_watch_stays_gapless()
    {
        // Replicas as processes of their own on a database of their own, each on a fixed address (kept across restarts).
        var database = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync("kills");
        var environment = new Dictionary<string, string> { [$"ConnectionStrings__{Extensions.StoreConnectionName}"] = database };
        var dll = typeof(RegistryEngine).Assembly.Location;
        string[] urls = [$"http://127.0.0.1:{ServiceProcess.FreePort()}", $"http://127.0.0.1:{ServiceProcess.FreePort()}"];
        string[] dirs = [Directory.CreateTempSubdirectory("registry-kill-a-").FullName, Directory.CreateTempSubdirectory("registry-kill-b-").FullName];
        var replicas = new ServiceProcess[2];
        for (var r = 0; r < 2; r++) replicas[r] = await ServiceProcess.StartAsync(dll, dirs[r], environment, grpcUrl: urls[r]);
        var channels = urls.Select(u => Grpc.Net.Client.GrpcChannel.ForAddress(u)).ToArray();
        var clients = channels.Select(c => new Registry.V1.SessionRegistry.SessionRegistryClient(c)).ToArray();
        try
        {
            // The watcher follows replica B, and moves to the other one from its last revision when its replica dies.
            using var stop = new CancellationTokenSource();
            var seen = new List<SessionEvent>();
            var watcher = Task.Run(async () =>
            {
                for (var r = 1; !stop.IsCancellationRequested; r = 1 - r)
                {
                    try
                    {
                        using var call = clients[r].WatchSessions(new WatchSessionsRequest { FromRevision = seen.Count > 0 ? seen[^1].Revision : 0 }, cancellationToken: stop.Token);
                        while (await call.ResponseStream.MoveNext(stop.Token)) lock (seen) seen.Add(call.ResponseStream.Current);
                    }
                    catch (RpcException) when (!stop.IsCancellationRequested)
                    {
                        await Task.Delay(50);
                    }
                    catch (Exception e) when (e is RpcException or OperationCanceledException && stop.IsCancellationRequested)
                    {
                        return;
                    }
                }
            });
            await Task.Delay(300); // subscribed (it starts from the revision it subscribes at, whatever it is)

            // 16 writers; a call that fails is tried again on the other replica with the same request id.
            var acknowledged = new ConcurrentDictionary<string, string>();
            var writers = Enumerable.Range(0, 16).Select(w => Task.Run(async () =>
            {
                for (var n = 0; !stop.IsCancellationRequested; n++)
                {
                    var request = new RegisterSessionRequest { Workload = "kills", Instance = $"{w}-{n}", RequestId = $"{w}-{n}", Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMinutes(10)) };
                    for (var attempt = 0; !stop.IsCancellationRequested; attempt++)
                    {
                        try
                        {
                            var session = await clients[(w + attempt) % 2].RegisterSessionAsync(request, deadline: DateTime.UtcNow.AddSeconds(10));
                            acknowledged[request.Instance] = session.Id;
                            break;
                        }
                        catch (RpcException)
                        {
                            await Task.Delay(20);
                        }
                    }
                }
            })).ToList();

            for (var r = 0; r < 2; r++)
            {
                var target = acknowledged.Count + 800;
                await Eventually.ValueAsync(() => Task.FromResult(acknowledged.Count), c => c >= target, Timeout, $"{target} registrations");
                await replicas[r].KillAsync(); // SIGKILL, mid-load
                replicas[r] = await ServiceProcess.StartAsync(dll, dirs[r], environment, grpcUrl: urls[r]);
            }
            var last = acknowledged.Count + 400;
            await Eventually.ValueAsync(() => Task.FromResult(acknowledged.Count), c => c >= last, Timeout, $"{last} registrations");
            await stop.CancelAsync();
            await Task.WhenAll(writers);
            await watcher;

            // Every acknowledged registration is stored, once, and live.
            var stored = new Dictionary<string, Session>();
            var token = "";
            long revision;
            do
            {
                var page = await clients[0].ListSessionsAsync(new ListSessionsRequest { Workload = "kills", PageSize = 1000, PageToken = token }, new CallOptions(deadline: DateTime.UtcNow + Timeout).WithWaitForReady());
                foreach (var session in page.Sessions) stored.Add(session.Instance, session);
                token = page.NextPageToken;
                revision = page.Revision;
            } while (token.Length > 0);
            var lost = acknowledged.Where(a => !stored.TryGetValue(a.Key, out var s) || s.Id != a.Value || s.State != Session.Types.State.Active).Select(a => a.Key).ToList();
            Assert.True(lost.Count == 0, $"{lost.Count} of {acknowledged.Count} acknowledged registrations lost or changed: {string.Join(", ", lost.Take(5))}");

            // The watch, across both kills: every revision from its first to the last, once each, in order.
            using var more = new CancellationTokenSource(Timeout);
            // (waiting for B's channel to be ready again: it may have backed off while B was down)
            using (var call = clients[1].WatchSessions(new WatchSessionsRequest { FromRevision = seen[^1].Revision }, new CallOptions(cancellationToken: more.Token).WithWaitForReady()))
                while (seen[^1].Revision < revision && await call.ResponseStream.MoveNext(more.Token)) seen.Add(call.ResponseStream.Current);
            var revisions = seen.Select(e => e.Revision).ToList();
            Assert.Equal(Enumerable.Range((int)revisions[0], revisions.Count).Select(x => (long)x), revisions);
            Assert.Equal(revision, revisions[^1]);
            var created = seen.Where(e => e.Type == SessionEvent.Types.Type.Created).Select(e => e.Session.Id).ToHashSet();
            Assert.All(acknowledged.Where(a => stored[a.Key].Revision > revisions[0]), a => Assert.Contains(a.Value, created));
        }
        finally
        {
            foreach (var channel in channels) channel.Dispose();
            foreach (var replica in replicas) await replica.DisposeAsync();
            foreach (var dir in dirs) try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
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
