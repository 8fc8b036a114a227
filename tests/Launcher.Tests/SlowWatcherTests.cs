using System.Net.Http;
using Grpc.Core;
using Grpc.Net.Client;
using Platform.Launcher.V1;

namespace Platform.Launcher.Tests;

/// <summary>A WatchInstanceEvents caller that stops reading is cut with a status that says how to resume; the
/// launcher never drops its events silently.</summary>
public sealed class SlowWatcherTests : LauncherTestBase
{
    protected override void Configure(LauncherOptions options) => options.WatchBuffer = 4;

    [Fact]
    public async Task A_watcher_that_stops_reading_is_cut_with_resource_exhausted_naming_where_to_resume_and_a_reader_gets_everything()
    {
        // The smallest HTTP/2 window a client may ask for, so that what the launcher writes backs up into its buffer
        // soon instead of into a large transport window.
        using var narrow = GrpcChannel.ForAddress(Host.Address, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { InitialHttp2StreamWindowSize = 65535 },
        });
        using var slow = new V1.Launcher.LauncherClient(narrow).WatchInstanceEvents(new WatchInstanceEventsRequest());
        await slow.ResponseHeadersAsync;
        using var reader = Client.WatchInstanceEvents(new WatchInstanceEventsRequest());
        await reader.ResponseHeadersAsync;
        var seen = new List<string>();
        var reading = Task.Run(async () =>
        {
            while (await reader.ResponseStream.MoveNext(CancellationToken.None))
                if (reader.ResponseStream.Current.Type == InstanceEvent.Types.Type.Started) lock (seen) seen.Add(reader.ResponseStream.Current.Instance.Id);
        });

        // Events of about 4 KB each (64 labels of 60 characters), far more than the transport and 4 events hold.
        var padding = new string('x', 60);
        var launched = new List<string>();
        for (var i = 0; i < 150; i++)
        {
            var request = new LaunchRequest { Template = "sleeper" };
            for (var l = 0; l < 64; l++) request.Labels[$"pad{l}"] = padding;
            launched.Add((await Client.LaunchAsync(request)).Id);
        }

        var error = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            using var cts = new CancellationTokenSource(Timeout);
            while (await slow.ResponseStream.MoveNext(cts.Token)) { }
        });
        Assert.Equal(StatusCode.ResourceExhausted, error.StatusCode);
        Assert.Contains("fell more than 4 events behind", error.Status.Detail);
        Assert.Contains("ListInstances", error.Status.Detail);

        // The watcher that reads got every start.
        await Testing.Eventually.ValueAsync(() => { lock (seen) return Task.FromResult(launched.Count(seen.Contains)); }, n => n == launched.Count, Timeout, "every STARTED event on the reading watch");
    }
}
