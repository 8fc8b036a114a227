using Grpc.Core;
using Grpc.Net.Client;

namespace Platform.Testing;

/// <summary>gRPC channels to platform services that send a bearer token (cleartext HTTP/2 on loopback).</summary>
public static class PlatformChannel
{
    /// <summary>The headers of one call with <c>authorization: Bearer <paramref name="token"/></c>.</summary>
    public static Metadata Bearer(string token) => new() { { "authorization", $"Bearer {token}" } };

    /// <summary>A channel whose every call carries <c>authorization: Bearer <paramref name="token"/></c> (none when empty).</summary>
    public static GrpcChannel Create(string address, string token)
    {
        if (token.Length == 0) return GrpcChannel.ForAddress(address);
        return GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            Credentials = ChannelCredentials.Create(ChannelCredentials.Insecure, CallCredentials.FromInterceptor((_, metadata) =>
            {
                metadata.Add("authorization", $"Bearer {token}");
                return Task.CompletedTask;
            })),
            UnsafeUseInsecureChannelCallCredentials = true,
        });
    }
}
