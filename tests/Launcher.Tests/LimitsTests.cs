using Grpc.Core;
using Platform.Launcher.V1;
using Platform.Testing;

namespace Platform.Launcher.Tests;

/// <summary>The launcher's explicit limits: watchers open at once and launches being started, each over its limit
/// RESOURCE_EXHAUSTED naming the setting.</summary>
public sealed class LimitsTests : LauncherTestBase
{
    protected override void Configure(LauncherOptions options) => options.MaxWatchers = 2;

    [Fact]
    public async Task A_watcher_over_the_limit_is_refused_and_a_place_freed_is_taken_again()
    {
        var first = Client.WatchInstanceEvents(new WatchInstanceEventsRequest());
        await first.ResponseHeadersAsync;
        using var second = Client.WatchInstanceEvents(new WatchInstanceEventsRequest());
        await second.ResponseHeadersAsync;

        using (var third = Client.WatchInstanceEvents(new WatchInstanceEventsRequest()))
        {
            var refused = await GrpcAssert.StatusAsync(StatusCode.ResourceExhausted, third.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Contains("Launcher:MaxWatchers", refused.Status.Detail, StringComparison.Ordinal);
        }

        first.Dispose(); // its place is freed once the server sees the stream end
        await StreamProbe.ServedAgainAsync(d => Client.WatchInstanceEvents(new WatchInstanceEventsRequest(), deadline: d), Timeout);
    }
}

/// <summary>With no launch allowed in flight, every launch is refused (and starts nothing); the slot of a launch is
/// given back when it ends, so one at a time passes.</summary>
public sealed class LaunchLimitTests : LauncherTestBase
{
    protected override void Configure(LauncherOptions options) => options.MaxLaunchesInFlight = 0;

    [Fact]
    public async Task Launches_over_the_limit_are_refused_and_start_nothing()
    {
        var refused = await GrpcAssert.StatusAsync(StatusCode.ResourceExhausted, LaunchAsync("sleeper"));
        Assert.Contains("Launcher:MaxLaunchesInFlight", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Empty((await Client.ListInstancesAsync(new ListInstancesRequest())).Instances);
    }
}

public sealed class OneLaunchAtATimeTests : LauncherTestBase
{
    protected override void Configure(LauncherOptions options) => options.MaxLaunchesInFlight = 1;

    [Fact]
    public async Task One_launch_at_a_time_passes_one_after_another()
    {
        for (var i = 0; i < 3; i++) await LaunchAsync("sleeper");
        Assert.Equal(3, (await Client.ListInstancesAsync(new ListInstancesRequest())).Instances.Count);
    }
}
