using Grpc.Core;
using Microsoft.Extensions.Time.Testing;
using Platform.Registry.V1;

namespace Platform.SessionRegistry.Tests;

/// <summary>Leases, renewal and expiry on a fake clock: nothing here sleeps for a lease to run out.</summary>
public class LeaseTests : RegistryTestBase
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 23, 12, 0, 0, TimeSpan.Zero));

    protected override TimeProvider? Time => _time;

    [Fact]
    public async Task A_renewed_lease_lives_on_and_an_unrenewed_one_expires_with_an_event()
    {
        var kept = await RegisterAsync("lease", "kept", ttl: TimeSpan.FromSeconds(10));
        var dropped = await RegisterAsync("lease", "dropped", ttl: TimeSpan.FromSeconds(10));
        using var watch = await WatchFromNowAsync();

        _time.Advance(TimeSpan.FromSeconds(6));
        var renewal = await Client.HeartbeatAsync(new HeartbeatRequest { Ids = { kept.Id } });
        Assert.Equal([kept.Id], renewal.RenewedIds);
        var renewed = await Client.GetSessionAsync(new GetSessionRequest { Id = kept.Id });
        Assert.Equal(_time.GetUtcNow(), renewed.HeartbeatTime.ToDateTimeOffset());
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromSeconds(10), renewed.ExpireTime.ToDateTimeOffset());

        _time.Advance(TimeSpan.FromSeconds(5)); // 11 s: "dropped" ran out at 10 s, "kept" lives until 16 s.
        var expired = Assert.Single(await NudgeUntilAsync(ReadEventsAsync(watch.ResponseStream, 1), TimeSpan.FromSeconds(4)));
        Assert.Equal(SessionEvent.Types.Type.Expired, expired.Type);
        Assert.Equal(dropped.Id, expired.Session.Id);
        Assert.Equal(Session.Types.State.Expired, expired.Session.State);
        Assert.Equal(dropped.ExpireTime, expired.Session.EndTime);
        Assert.Equal("lease expired", expired.Session.EndReason);
        Assert.Equal(Session.Types.State.Active, (await Client.GetSessionAsync(new GetSessionRequest { Id = kept.Id })).State);

        var late = await Client.HeartbeatAsync(new HeartbeatRequest { Ids = { dropped.Id, kept.Id, System.Ulid.NewUlid().ToString() } });
        Assert.Equal([dropped.Id], late.ExpiredIds);
        Assert.Equal([kept.Id], late.RenewedIds);
        Assert.Single(late.UnknownIds);

        // The key is free again: a new registration is a new session.
        Assert.NotEqual(dropped.Id, (await RegisterAsync("lease", "dropped")).Id);
    }

    /// <summary>
    /// The sweeper re-arms its timer after each wake-up on its own thread; an Advance that lands before it has done
    /// so would leave it waiting forever. Nudge the clock a sweep interval at a time (bounded) until the result is in.
    /// </summary>
    private async Task<T> NudgeUntilAsync<T>(Task<T> pending, TimeSpan limit)
    {
        var step = new RegistryOptions().SweepInterval;
        var advanced = TimeSpan.Zero;
        while (!pending.IsCompleted)
        {
            await Task.WhenAny(pending, Task.Delay(100));
            if (pending.IsCompleted) break;
            Assert.True(advanced < limit, "nothing happened within the nudges");
            _time.Advance(step);
            advanced += step;
        }
        return await pending;
    }

    [Fact]
    public async Task A_short_lease_registered_while_the_sweeper_sleeps_wakes_it_and_expires_on_time()
    {
        // At rest the sweeper sleeps until its lock is due (LeaderLease / 3 = 5 s), not once per MinTtl.
        using var watch = await WatchFromNowAsync();
        await Task.Delay(300); // real time: the sweeper has armed its long sleep
        var session = await RegisterAsync("lease", "short", ttl: TimeSpan.FromSeconds(1));

        // Expired at 1 s within the nudges' 2 s: only a sweeper woken by the registration is looking by then.
        var expired = Assert.Single(await NudgeUntilAsync(ReadEventsAsync(watch.ResponseStream, 2), TimeSpan.FromSeconds(2)), e => e.Type == SessionEvent.Types.Type.Expired);
        Assert.Equal(session.Id, expired.Session.Id);
        Assert.Equal(session.ExpireTime, expired.Session.EndTime);
    }

    [Fact]
    public async Task A_lease_that_ran_out_cannot_be_renewed_even_before_the_sweeper_marks_it()
    {
        var session = await RegisterAsync("lease", "late", ttl: TimeSpan.FromSeconds(2));

        _time.SetUtcNow(_time.GetUtcNow() + TimeSpan.FromSeconds(2)); // no timer fires: the sweeper has not run

        var reply = await Client.HeartbeatAsync(new HeartbeatRequest { Ids = { session.Id } });
        Assert.Equal([session.Id], reply.ExpiredIds);
        Assert.Empty(reply.RenewedIds);
    }

    [Fact]
    public async Task KeepAlive_streams_renew_batches_and_report_unknown_ids()
    {
        var a = await RegisterAsync("ka", "a", ttl: TimeSpan.FromSeconds(5));
        var b = await RegisterAsync("ka", "b", ttl: TimeSpan.FromSeconds(5));
        var unknown = System.Ulid.NewUlid().ToString();
        using var stream = Client.KeepAlive();

        for (var round = 0; round < 5; round++)
        {
            _time.Advance(TimeSpan.FromSeconds(4));
            await stream.RequestStream.WriteAsync(new KeepAliveRequest { Ids = { a.Id, b.Id, unknown } });
            Assert.True(await stream.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Equal([a.Id, b.Id], stream.ResponseStream.Current.RenewedIds);
            Assert.Equal([unknown], stream.ResponseStream.Current.UnknownIds);
        }
        await stream.RequestStream.CompleteAsync();

        // 20 s on a 5 s ttl, alive because of the stream.
        Assert.Equal(Session.Types.State.Active, (await Client.GetSessionAsync(new GetSessionRequest { Id = a.Id })).State);
    }

    [Fact]
    public async Task A_malformed_KeepAlive_request_ends_the_stream_with_invalid_argument()
    {
        using var stream = Client.KeepAlive();
        await stream.RequestStream.WriteAsync(new KeepAliveRequest { Ids = { "not-an-id" } });

        var error = await Assert.ThrowsAsync<RpcException>(() => stream.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
    }

    [Fact]
    public async Task After_a_restart_every_live_lease_starts_afresh_so_an_outage_expires_nothing()
    {
        var session = await RegisterAsync("lease", "outage", ttl: TimeSpan.FromSeconds(10));
        await Host.DisposeAsync();
        _time.Advance(TimeSpan.FromSeconds(9)); // the registry is down for 9 s of a 10 s lease

        Host = await RegistryHost.StartAsync(DataDirectory, _time, Configure);
        Client = Host.NewClient();
        _time.Advance(TimeSpan.FromSeconds(5));

        var loaded = await Client.GetSessionAsync(new GetSessionRequest { Id = session.Id });
        Assert.Equal(Session.Types.State.Active, loaded.State);
        Assert.Equal([session.Id], (await Client.HeartbeatAsync(new HeartbeatRequest { Ids = { session.Id } })).RenewedIds);
    }
}
