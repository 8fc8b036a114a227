using Grpc.Core;
using Grpc.Net.Client;

namespace Platform.Testing;

/// <summary>gRPC channels to platform services that send a bearer token (cleartext HTTP/2 on loopback).</summary>
public static class PlatformChannel
{
    /// <summary>The headers of one call with <c>authorization: Bearer <paramref name="token"/></c>.</summary>
    public static Metadata Bearer(string token) => new() { { "authorization", $"Bearer {token}" } };

    /// <summary>
    /// A channel whose every call carries <c>authorization: Bearer <paramref name="token"/></c> (none when empty). It
    /// reconnects within a second of a restarted service being back (gRPC's default backoff grows to two minutes).
    /// </summary>
    public static GrpcChannel Create(string address, string token)
    {
        var options = new GrpcChannelOptions { MaxReconnectBackoff = TimeSpan.FromSeconds(1) };
        if (token.Length > 0)
        {
            options.Credentials = ChannelCredentials.Create(ChannelCredentials.Insecure, CallCredentials.FromInterceptor((_, metadata) =>
            {
                metadata.Add("authorization", $"Bearer {token}");
                return Task.CompletedTask;
            }));
            options.UnsafeUseInsecureChannelCallCredentials = true;
        }
        return GrpcChannel.ForAddress(address, options);
    }
}
