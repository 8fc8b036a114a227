using Grpc.Core;
using Grpc.Net.Client;
using Platform.Registry.V1;

namespace Platform.SessionRegistry.Tests;

public class RegisterTests : RegistryTestBase
{
    [Fact]
    public async Task Hundreds_of_concurrent_registrations_of_one_key_from_many_connections_yield_one_session()
    {
        using var watch = await WatchFromNowAsync("racer");
        var clients = Enumerable.Range(0, 16).Select(_ => Host.NewClient()).ToList();
        using var start = new ManualResetEventSlim();

        var calls = Enumerable.Range(0, 256).Select(i => Task.Run(async () =>
        {
            start.Wait();
            return await clients[i % clients.Count].RegisterSessionAsync(
                new RegisterSessionRequest { Workload = "racer", Instance = "only", Pid = 7, Node = "n" });
        })).ToList();
        start.Set();
        var sessions = await Task.WhenAll(calls);

        Assert.Single(sessions.Select(s => s.Id).Distinct());
        var list = await Client.ListSessionsAsync(new ListSessionsRequest { Workload = "racer" });
        Assert.Equal(sessions[0].Id, Assert.Single(list.Sessions).Id);
        var created = Assert.Single(await ReadEventsAsync(watch.ResponseStream, 1));
        Assert.Equal(SessionEvent.Types.Type.Created, created.Type);
        Assert.Equal(sessions[0].Id, created.Session.Id);
    }

    [Fact]
    public async Task A_repeated_request_id_returns_the_first_answer_even_after_the_session_ended()
    {
        var first = await RegisterAsync("w", "a", requestId: "req-1");
        await Client.EndSessionAsync(new EndSessionRequest { Id = first.Id, Reason = "done" });

        var again = await RegisterAsync("w", "a", requestId: "req-1");
        var fresh = await RegisterAsync("w", "a", requestId: "req-2");

        Assert.Equal(first.Id, again.Id);
        Assert.Equal(Session.Types.State.Ended, again.State);
        Assert.NotEqual(first.Id, fresh.Id);
        Assert.Equal(Session.Types.State.Active, fresh.State);
    }

    [Fact]
    public async Task A_registration_gets_a_ulid_the_defaults_and_every_field_it_gave()
    {
        var session = await RegisterAsync("agent", "7", labels: new Dictionary<string, string> { ["team"] = "core" });

        Assert.True(System.Ulid.TryParse(session.Id, out _));
        Assert.Equal(Session.Types.State.Active, session.State);
        Assert.Equal(("agent", "7", "node-1", 42L), (session.Workload, session.Instance, session.Node, session.Pid));
        Assert.Equal("core", session.Labels["team"]);
        Assert.Equal(TimeSpan.FromSeconds(30), session.Ttl.ToTimeSpan());
        Assert.Equal(session.CreateTime, session.HeartbeatTime);
        Assert.Equal(session.CreateTime.ToDateTimeOffset() + TimeSpan.FromSeconds(30), session.ExpireTime.ToDateTimeOffset());
        Assert.True(session.Revision > 0);
        Assert.Equal(session, await Client.GetSessionAsync(new GetSessionRequest { Id = session.Id }));
    }

    [Fact]
    public async Task Re_registering_a_live_key_with_a_new_pid_updates_the_same_session()
    {
        var first = await RegisterAsync("w", "x");
        using var watch = await WatchFromNowAsync();

        var second = await Client.RegisterSessionAsync(new RegisterSessionRequest { Workload = "w", Instance = "x", Pid = 99, Node = "node-1" });

        Assert.Equal(first.Id, second.Id);
        Assert.Equal(99, second.Pid);
        var updated = Assert.Single(await ReadEventsAsync(watch.ResponseStream, 1));
        Assert.Equal(SessionEvent.Types.Type.Updated, updated.Type);
        Assert.Equal(first.Revision + 1, updated.Revision);
    }

    [Fact]
    public async Task Ending_is_recorded_once_and_ending_again_returns_the_ended_session()
    {
        var session = await RegisterAsync("w", "end-me");
        using var watch = await WatchFromNowAsync();

        var ended = await Client.EndSessionAsync(new EndSessionRequest { Id = session.Id, Reason = "finished" });
        var again = await Client.EndSessionAsync(new EndSessionRequest { Id = session.Id, Reason = "twice" });

        Assert.Equal(Session.Types.State.Ended, ended.State);
        Assert.Equal("finished", ended.EndReason);
        Assert.NotNull(ended.EndTime);
        Assert.Equal(ended, again);
        var events = await ReadEventsAsync(watch.ResponseStream, 1);
        Assert.Equal(SessionEvent.Types.Type.Ended, Assert.Single(events).Type);
        var heartbeat = await Client.HeartbeatAsync(new HeartbeatRequest { Ids = { session.Id } });
        Assert.Equal([session.Id], heartbeat.ExpiredIds);

        var next = await RegisterAsync("w", "end-me");
        Assert.NotEqual(session.Id, next.Id);
    }

    [Fact]
    public async Task Sessions_survive_a_restart_of_the_registry_and_keep_their_revision()
    {
        var session = await RegisterAsync("durable", "1");
        await Host.DisposeAsync();

        Host = await RegistryHost.StartAsync(DataDirectory);
        Client = Host.NewClient();

        var loaded = await Client.GetSessionAsync(new GetSessionRequest { Id = session.Id });
        Assert.Equal(Session.Types.State.Active, loaded.State);
        Assert.Equal(session.Revision, loaded.Revision);
        Assert.Equal(session.Id, (await RegisterAsync("durable", "1")).Id);
        var list = await Client.ListSessionsAsync(new ListSessionsRequest());
        Assert.Equal(session.Revision, list.Revision);
    }

    [Fact]
    public async Task Exactly_one_of_two_registries_on_one_store_sweeps_and_the_other_takes_over_when_it_stops()
    {
        await Host.DisposeAsync();
        Host = await RegistryHost.StartAsync(DataDirectory, configure: o => o.LeaderLease = TimeSpan.FromSeconds(1));
        var second = await RegistryHost.StartAsync(DataDirectory, configure: o => o.LeaderLease = TimeSpan.FromSeconds(1));
        var hosts = new[] { Host, second };
        try
        {
            // Never two at once. (A leader whose renewal runs late stops sweeping when the lease it holds runs out, even
            // before it learns it lost the lock: for a moment there may be none.)
            await Eventually(() => hosts.Count(h => h.Sweeper.IsLeader) == 1);
            for (var i = 0; i < 10; i++)
            {
                await Task.Delay(100);
                Assert.True(hosts.Count(h => h.Sweeper.IsLeader) <= 1, "two registries sweep at once");
            }

            await Eventually(() => hosts.Count(h => h.Sweeper.IsLeader) == 1);
            var leader = hosts.Single(h => h.Sweeper.IsLeader);
            var follower = hosts.Single(h => !h.Sweeper.IsLeader);
            await leader.DisposeAsync();
            await Eventually(() => follower.Sweeper.IsLeader);
        }
        finally
        {
            await second.DisposeAsync();
        }
    }

    private static Task Eventually(Func<bool> condition) =>
        Testing.Eventually.ValueAsync(() => Task.FromResult(condition()), met => met, Timeout, "the condition");
}

public class RegisterBatchTests : RegistryTestBase
{
    [Fact]
    public async Task A_batch_registers_each_as_RegisterSession_would_with_its_own_error()
    {
        using var watch = await WatchFromNowAsync("batch");
        var existing = await RegisterAsync("batch", "held", requestId: "held-1");
        var response = await Client.RegisterSessionsAsync(new RegisterSessionsRequest
        {
            Requests =
            {
                new RegisterSessionRequest { Workload = "batch", Instance = "a", Node = "n", RequestId = "a-1" },
                new RegisterSessionRequest { Workload = "", Instance = "b", Node = "n" },
                new RegisterSessionRequest { Workload = "batch", Instance = "held", Node = "n" },
                new RegisterSessionRequest { Workload = "batch", Instance = "c", Node = "n", Labels = { ["bad key!"] = "x" } },
                new RegisterSessionRequest { Workload = "batch", Instance = "a", Node = "n", RequestId = "a-1" },
            },
        });

        Assert.Equal(5, response.Results.Count);
        var (a, empty, held, badLabel, again) = (response.Results[0], response.Results[1], response.Results[2], response.Results[3], response.Results[4]);
        Assert.Equal((0, "a"), (a.Code, a.Session.Instance));
        Assert.Equal((int)StatusCode.InvalidArgument, empty.Code);
        Assert.Contains("workload", empty.Message, StringComparison.Ordinal);
        Assert.Null(empty.Session);
        Assert.Equal(existing.Id, held.Session.Id); // the live session of (workload, instance), as RegisterSession returns it
        Assert.Equal((int)StatusCode.InvalidArgument, badLabel.Code);
        Assert.Contains("bad key!", badLabel.Message, StringComparison.Ordinal);
        Assert.Equal(a.Session.Id, again.Session.Id); // one request_id twice: one session

        var listed = await Client.ListSessionsAsync(new ListSessionsRequest { Workload = "batch" });
        Assert.Equal(new[] { "a", "held" }, listed.Sessions.Select(s => s.Instance).Order(StringComparer.Ordinal));
        var created = await ReadEventsAsync(watch.ResponseStream, 2);
        Assert.Equal(new[] { "a", "held" }, created.Select(e => e.Session.Instance).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task An_empty_batch_and_one_over_the_limit_are_refused_whole()
    {
        var empty = await Assert.ThrowsAsync<RpcException>(() => Client.RegisterSessionsAsync(new RegisterSessionsRequest()).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, empty.StatusCode);
        Assert.Contains("at least one registration", empty.Status.Detail, StringComparison.Ordinal);
        var tooMany = new RegisterSessionsRequest();
        for (var i = 0; i <= Platform.ServiceDefaults.BatchCalls.MaxItems; i++) tooMany.Requests.Add(new RegisterSessionRequest { Workload = "many", Instance = $"i{i}", Node = "n" });
        var refused = await Assert.ThrowsAsync<RpcException>(() => Client.RegisterSessionsAsync(tooMany).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Contains("at most 1000", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Empty((await Client.ListSessionsAsync(new ListSessionsRequest { Workload = "many" })).Sessions);
    }
}
