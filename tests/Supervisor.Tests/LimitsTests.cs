using System.Net.Http;
using Grpc.Core;
using Grpc.Net.Client;
using Platform.Supervisor.V1;
using Platform.Testing;

namespace Platform.Supervisor.Tests;

/// <summary>Supervisor:MaxWatchers: one WatchWorkloads stream more than the limit is RESOURCE_EXHAUSTED naming the
/// setting, and a place freed is taken again.</summary>
public sealed class WatcherLimitTests : SupervisorTestBase
{
    protected override IReadOnlyDictionary<string, string> SupervisorSettings => new Dictionary<string, string> { ["Supervisor__MaxWatchers"] = "2" };

    [Fact]
    public async Task A_watcher_over_the_limit_is_refused_naming_the_setting_and_a_place_freed_is_taken_again()
    {
        var first = Client.WatchWorkloads(new WatchWorkloadsRequest());
        await first.ResponseHeadersAsync;
        using var second = Client.WatchWorkloads(new WatchWorkloadsRequest());
        await second.ResponseHeadersAsync;

        using (var third = Client.WatchWorkloads(new WatchWorkloadsRequest()))
        {
            var refused = await GrpcAssert.StatusAsync(StatusCode.ResourceExhausted, third.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Contains("Supervisor:MaxWatchers", refused.Status.Detail, StringComparison.Ordinal);
        }

        first.Dispose();
        await StreamProbe.ServedAgainAsync(d => Client.WatchWorkloads(new WatchWorkloadsRequest(), deadline: d), Timeout);
    }
}

/// <summary>
/// Platform:MaxStreamsPerConnection (Kestrel's HTTP/2 limit, made explicit): a connection with that many streams open
/// serves no further call until one ends; another connection is not held up by it.
/// </summary>
public sealed class StreamsPerConnectionTests : SupervisorTestBase
{
    protected override IReadOnlyDictionary<string, string> SupervisorSettings => new Dictionary<string, string> { ["Platform__MaxStreamsPerConnection"] = "2" };

    [Fact]
    public async Task A_connection_at_its_stream_limit_serves_the_next_call_only_once_a_stream_ends()
    {
        // One connection only (gRPC's client would otherwise open a second one when the first is full).
        using var single = GrpcChannel.ForAddress(SupervisorProcess.GrpcUrl, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = false },
        });
        var client = new V1.Supervisor.SupervisorClient(single);
        var first = client.WatchWorkloads(new WatchWorkloadsRequest());
        await first.ResponseHeadersAsync;
        using var second = client.WatchWorkloads(new WatchWorkloadsRequest());
        await second.ResponseHeadersAsync;

        // Both streams taken: a call on this connection waits, while the same call on another connection is served.
        Assert.False(await ServedWithinASecondAsync(client), "a third stream was served on a connection limited to two");
        Assert.True(await ServedWithinASecondAsync(Client), "another connection was held up by the full one");

        // One stream ends: the connection serves again.
        first.Dispose();
        await Eventually.ValueAsync(() => ServedWithinASecondAsync(client), served => served, Timeout, "a call to be served once a stream has ended");
    }

    /// <summary>Whether a call is answered within a second (a call waiting for a stream runs out its deadline
    /// client-side: the request never reaches the service).</summary>
    private static async Task<bool> ServedWithinASecondAsync(V1.Supervisor.SupervisorClient client)
    {
        try
        {
            await client.ListWorkloadsAsync(new ListWorkloadsRequest(), deadline: DateTime.UtcNow.AddSeconds(1));
            return true;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.DeadlineExceeded)
        {
            return false;
        }
    }
}
