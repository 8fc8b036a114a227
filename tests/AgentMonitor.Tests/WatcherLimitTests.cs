using Grpc.Core;
using Platform.Monitor.V1;
using Platform.Testing;

namespace Platform.AgentMonitor.Tests;

/// <summary>Monitor:MaxWatchers: one WatchStatuses stream more than the limit is RESOURCE_EXHAUSTED naming it.</summary>
public sealed class WatcherLimitTests : MonitorTestBase
{
    protected override void Configure(MonitorOptions options) => options.MaxWatchers = 1;

    [Fact]
    public async Task A_watcher_over_the_limit_is_refused_naming_the_setting()
    {
        using var first = Client.WatchStatuses(new WatchStatusesRequest());
        await first.ResponseHeadersAsync;
        using var second = Client.WatchStatuses(new WatchStatusesRequest());

        var refused = await GrpcAssert.StatusAsync(StatusCode.ResourceExhausted, second.ResponseStream.MoveNext(CancellationToken.None));

        Assert.Contains("Monitor:MaxWatchers", refused.Status.Detail, StringComparison.Ordinal);
    }
}
