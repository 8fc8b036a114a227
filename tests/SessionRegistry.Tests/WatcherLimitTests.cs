using Grpc.Core;
using Platform.Registry.V1;
using Platform.Testing;

namespace Platform.SessionRegistry.Tests;

/// <summary>Registry:MaxWatchers: one watch stream more than the limit is RESOURCE_EXHAUSTED, and a closed one frees
/// its place (the limit is ServiceDefaults' WatcherLimit, the monitor's and the supervisor's too).</summary>
public sealed class WatcherLimitTests : RegistryTestBase
{
    protected override void Configure(RegistryOptions options) => options.MaxWatchers = 1;

    [Fact]
    public async Task A_watcher_over_the_limit_is_refused_naming_the_setting_and_a_freed_place_is_served()
    {
        var first = Client.WatchSessions(new WatchSessionsRequest());
        await first.ResponseHeadersAsync;
        using (var second = Client.WatchSessions(new WatchSessionsRequest()))
        {
            var refused = await GrpcAssert.StatusAsync(StatusCode.ResourceExhausted, second.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Contains("Registry:MaxWatchers", refused.Status.Detail, StringComparison.Ordinal);
        }

        first.Dispose();
        await StreamProbe.ServedAgainAsync(d => Client.WatchSessions(new WatchSessionsRequest(), deadline: d), Timeout);
    }
}
