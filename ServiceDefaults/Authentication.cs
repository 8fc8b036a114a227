using System.Security.Cryptography;
using System.Text;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace Platform.ServiceDefaults;

/// <summary>
/// The bearer tokens of a platform (configuration <c>Platform:Token</c> and <c>Platform:AgentToken</c>; the AppHost
/// generates both per run). With <c>Platform:Token</c> set, every gRPC call needs <c>authorization: Bearer TOKEN</c>.
/// <c>Platform:AgentToken</c> is a key, never handed out: each instance gets a token of its own,
/// <c>agent.INSTANCE.MAC</c> (an HMAC-SHA256 of its instance id under the key), as <c>PLATFORM_TOKEN</c>, which may only
/// register, renew, read and end that instance's own registry session. Without <c>Platform:Token</c> nothing is checked
/// (a service run by hand for development).
/// </summary>
public sealed class PlatformTokens(IConfiguration configuration)
{
    public const string TokenKey = "Platform:Token";
    public const string AgentTokenKey = "Platform:AgentToken";

    /// <summary>The full-access token, or null when authentication is off.</summary>
    public string? Token => configuration[TokenKey] is { Length: > 0 } token ? token : null;

    /// <summary>The key of the agents' tokens, or null.</summary>
    public string? AgentToken => configuration[AgentTokenKey] is { Length: > 0 } token ? token : null;

    private const string AgentPrefix = "agent.";

    /// <summary>The token of instance <paramref name="instanceId"/>, or null without an agent key.</summary>
    public string? AgentTokenFor(string instanceId) => AgentToken is { } key ? $"{AgentPrefix}{instanceId}.{Mac(key, instanceId)}" : null;

    /// <summary>Whether <paramref name="given"/> is an instance's token under this key, and whose.</summary>
    public bool TryAgent(string? given, out string instanceId)
    {
        instanceId = "";
        if (AgentToken is not { } key || given is null || !given.StartsWith(AgentPrefix, StringComparison.Ordinal)) return false;
        var dot = given.LastIndexOf('.');
        if (dot <= AgentPrefix.Length) return false;
        var id = given[AgentPrefix.Length..dot];
        if (!Matches(given[(dot + 1)..], Mac(key, id))) return false;
        instanceId = id;
        return true;
    }

    private static string Mac(string key, string instanceId) =>
        Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(instanceId)));

    /// <summary>The instance an agent's call was authenticated as, or null for the platform's token (or no check).</summary>
    public static string? AgentOf(Grpc.Core.ServerCallContext context) =>
        context.UserState.TryGetValue(AgentUserState, out var id) ? (string)id : null;

    internal const string AgentUserState = "platform.agent";

    /// <summary>Compares in constant time (over fixed-length hashes, so not even the length leaks).</summary>
    public static bool Matches(string? given, string expected) =>
        given is not null && CryptographicOperations.FixedTimeEquals(
            SHA256.HashData(Encoding.UTF8.GetBytes(given)), SHA256.HashData(Encoding.UTF8.GetBytes(expected)));
}

/// <summary>
/// Checks every incoming call's bearer token (see <see cref="PlatformTokens"/>): UNAUTHENTICATED without a right one,
/// PERMISSION_DENIED for the agent token outside the registry's session calls. grpc.health.v1 and reflection stay open
/// for probes and tools. The token is never written anywhere: not in a status, not in a log.
/// </summary>
public sealed class AuthenticationInterceptor(PlatformTokens tokens, ILogger<AuthenticationInterceptor> logger) : Interceptor
{
    private static readonly string[] Open = ["/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/"];

    /// <summary>What an agent may call: its own session's life.</summary>
    private static readonly HashSet<string> AgentMethods = new(StringComparer.Ordinal)
    {
        "/platform.registry.v1.SessionRegistry/RegisterSession",
        "/platform.registry.v1.SessionRegistry/Heartbeat",
        "/platform.registry.v1.SessionRegistry/KeepAlive",
        "/platform.registry.v1.SessionRegistry/GetSession",
        "/platform.registry.v1.SessionRegistry/EndSession",
    };

    private int _warned;

    private void Authorize(ServerCallContext context)
    {
        if (tokens.Token is not { } token)
        {
            if (Interlocked.Exchange(ref _warned, 1) == 0)
                logger.LogWarning("Authentication is off: {Key} is not set, so every call is accepted", PlatformTokens.TokenKey);
            return;
        }
        var method = context.Method;
        if (Open.Any(prefix => method.StartsWith(prefix, StringComparison.Ordinal))) return;
        var header = context.RequestHeaders.GetValue("authorization");
        var given = header is not null && header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header["Bearer ".Length..].Trim() : null;
        if (PlatformTokens.Matches(given, token)) return;
        if (tokens.TryAgent(given, out var instance))
        {
            context.UserState[PlatformTokens.AgentUserState] = instance;
            if (AgentMethods.Contains(method)) return; // its own session only: the registry checks which
            throw new RpcException(new Status(StatusCode.PermissionDenied,
                $"an agent's token (PLATFORM_TOKEN) may only register, renew, read and end registry sessions, not call {method}"));
        }
        throw new RpcException(new Status(StatusCode.Unauthenticated, given is null
            ? "this call needs 'authorization: Bearer <token>' (the AppHost writes the token to apphost.json; a cluster keeps it in a Secret)"
            : "the bearer token is not valid here"));
    }

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Authorize(context);
        return continuation(request, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authorize(context);
        return continuation(requestStream, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authorize(context);
        return continuation(request, responseStream, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authorize(context);
        return continuation(requestStream, responseStream, context);
    }
}

/// <summary>Adds the platform's bearer token to the outgoing calls of a platform client (none when it is not set).</summary>
public sealed class BearerTokenHandler(PlatformTokens tokens) : DelegatingHandler
{
    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (tokens.Token is { } token) request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return base.SendAsync(request, cancellationToken);
    }
}
