using Platform.ServiceDefaults;
using Grpc.Core;
using Platform.Registry.V1;

namespace Platform.SessionRegistry.Tests;

public class WatchTests : RegistryTestBase
{
    protected override void Configure(RegistryOptions options) => options.WatchHistory = 50;

    [Fact]
    public async Task A_watcher_that_reconnects_from_its_last_revision_gets_every_later_event_once_and_in_order()
    {
        var watch = await WatchFromNowAsync();
        var firstBatch = new List<Session>();
        for (var i = 0; i < 10; i++) firstBatch.Add(await RegisterAsync("watch", $"i{i}"));
        var seen = await ReadEventsAsync(watch.ResponseStream, 5);
        watch.Dispose(); // the watcher goes away after 5 of 10 events

        // Changes while it is away: ends, registrations.
        await Client.EndSessionAsync(new EndSessionRequest { Id = firstBatch[0].Id });
        for (var i = 10; i < 15; i++) await RegisterAsync("watch", $"i{i}");

        using var resumed = Watch(seen[^1].Revision);
        var rest = await ReadEventsAsync(resumed.ResponseStream, 11);
        var all = seen.Concat(rest).ToList();

        Assert.Equal(16, all.Count);
        Assert.Equal(Enumerable.Range((int)all[0].Revision, 16).Select(r => (long)r), all.Select(e => e.Revision));
        Assert.Equal(15, all.Count(e => e.Type == SessionEvent.Types.Type.Created));
        Assert.Equal(firstBatch[0].Id, Assert.Single(all, e => e.Type == SessionEvent.Types.Type.Ended).Session.Id);
    }

    [Fact]
    public async Task Watching_from_a_revision_older_than_the_kept_history_is_out_of_range()
    {
        var first = await RegisterAsync("old", "0");
        for (var i = 1; i < 60; i++) await RegisterAsync("old", $"{i}");

        using var tooOld = Watch(first.Revision);
        var error = await Assert.ThrowsAsync<RpcException>(() => tooOld.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(StatusCode.OutOfRange, error.StatusCode);
        Assert.Contains("list sessions", error.Status.Detail);

        using var ahead = Watch(first.Revision + 1000);
        Assert.Equal(StatusCode.OutOfRange, (await Assert.ThrowsAsync<RpcException>(() => ahead.ResponseStream.MoveNext(CancellationToken.None))).StatusCode);

        var list = await Client.ListSessionsAsync(new ListSessionsRequest { Workload = "old", PageSize = 1000 });
        Assert.Equal(60, list.Sessions.Count);
        using var fromList = Watch(list.Revision);
        await RegisterAsync("old", "after-list");
        var next = Assert.Single(await ReadEventsAsync(fromList.ResponseStream, 1));
        Assert.Equal(list.Revision + 1, next.Revision);
    }

    [Fact]
    public async Task A_workload_filter_delivers_only_that_workloads_events()
    {
        using var watch = await WatchFromNowAsync("mine");
        await RegisterAsync("other", "1");
        var mine = await RegisterAsync("mine", "1");

        var only = Assert.Single(await ReadEventsAsync(watch.ResponseStream, 1));
        Assert.Equal(mine.Id, only.Session.Id);
    }

    [Fact]
    public async Task One_hundred_watchers_each_see_every_change()
    {
        var watchers = new List<AsyncServerStreamingCall<SessionEvent>>();
        for (var i = 0; i < 100; i++) watchers.Add(await WatchFromNowAsync());
        for (var i = 0; i < 5; i++) await RegisterAsync("fan", $"{i}");

        var results = await Task.WhenAll(watchers.Select(w => ReadEventsAsync(w.ResponseStream, 5)));

        Assert.All(results, events => Assert.Equal(5, events.Count));
        Assert.Single(results.Select(events => string.Join(",", events.Select(e => e.Revision))).Distinct());
        foreach (var w in watchers) w.Dispose();
    }
}

/// <summary>The fan-out itself: a slow watcher is cut off, never slows the publisher or the others.</summary>
public class WatchHubTests
{
    private static SessionEvent Event(long revision) =>
        new() { Revision = revision, Type = SessionEvent.Types.Type.Created, Session = new Session { Id = $"{revision}", Workload = "w" } };

    [Fact]
    public void A_watcher_that_stops_reading_is_cut_off_with_resource_exhausted_and_the_others_get_everything()
    {
        var hub = new WatchHub(historyCapacity: 1000, watcherBuffer: 8);
        using var slow = hub.Subscribe(0, "");
        using var fast = hub.Subscribe(0, "");
        var received = new List<long>();

        for (var revision = 1; revision <= 100; revision++)
        {
            hub.Publish([Event(revision)]);
            while (fast.Events.TryRead(out var e)) received.Add(e.Revision);
        }

        Assert.Equal(Enumerable.Range(1, 100).Select(r => (long)r), received);
        Assert.Equal(1, hub.WatcherCount);
        var drained = new List<long>();
        while (slow.Events.TryRead(out var e)) drained.Add(e.Revision);
        Assert.Equal(Enumerable.Range(1, 8).Select(r => (long)r), drained);
        var cut = Assert.IsType<PlatformException>(slow.Events.Completion.Exception?.InnerException);
        Assert.Equal(StatusCode.ResourceExhausted, cut.StatusCode);
        Assert.Contains("resume from revision 8", cut.Message);
    }

    [Fact]
    public void Resuming_inside_the_history_replays_exactly_the_missing_events()
    {
        var hub = new WatchHub(historyCapacity: 10, watcherBuffer: 100);
        for (var revision = 1; revision <= 30; revision++) hub.Publish([Event(revision)]);

        using var resumed = hub.Subscribe(25, "");
        hub.Publish([Event(31)]);

        var events = new List<long>();
        while (resumed.Events.TryRead(out var e)) events.Add(e.Revision);
        Assert.Equal([26, 27, 28, 29, 30, 31], events);
        Assert.Equal(StatusCode.OutOfRange, Assert.Throws<PlatformException>(() => hub.Subscribe(20, "")).StatusCode);
        using var edge = hub.Subscribe(21, ""); // 22..31 are all kept (31 pushed 21 out)
    }
}
