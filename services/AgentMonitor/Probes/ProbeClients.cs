using System.Collections.Concurrent;
using Grpc.Net.Client;

namespace Platform.AgentMonitor.Probes;

/// <summary>
/// Connections shared by all probes: one HTTP handler (pooling connections per host, HTTP/1.1 and HTTP/2) under one
/// HttpClient for http probes and one GrpcChannel per address for grpc_health probes. Probes call the target as it
/// is: no retries, no resilience handler (a retry would hide exactly what a probe is there to see).
/// </summary>
public sealed class ProbeClients : IDisposable
{
    private readonly SocketsHttpHandler _handler = new()
    {
        AllowAutoRedirect = false,
        UseCookies = false,
        UseProxy = false,
        PooledConnectionIdleTimeout = TimeSpan.FromMinutes(2),
        EnableMultipleHttp2Connections = true,
    };
    private readonly ConcurrentDictionary<Uri, GrpcChannel> _channels = new();

    public ProbeClients()
    {
        Http = new HttpClient(_handler, disposeHandler: false) { Timeout = Timeout.InfiniteTimeSpan };
    }

    public HttpClient Http { get; }

    public GrpcChannel Channel(Uri address) =>
        _channels.GetOrAdd(address, a => GrpcChannel.ForAddress(a, new GrpcChannelOptions
        {
            HttpHandler = _handler,
            DisposeHttpClient = false,
            // A probe is one attempt: never retried by the channel.
            MaxRetryAttempts = 0,
        }));

    public void Dispose()
    {
        foreach (var channel in _channels.Values) channel.Dispose();
        Http.Dispose();
        _handler.Dispose();
    }
}
