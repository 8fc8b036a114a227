using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Platform.Registry.V1;
using Platform.ServiceDefaults;
using Platform.Testing;
using static Platform.Testing.PlatformChannel;

namespace Platform.SessionRegistry.Tests;

/// <summary>
/// Bearer tokens on a real registry over loopback (the check is ServiceDefaults', so every service has it): the
/// platform's token, an agent's token that may only keep its session, none, a wrong one, and the open health service.
/// </summary>
public sealed class AuthenticationTests : IAsyncLifetime
{
    private const string Token = "platform-token-0123456789abcdef";
    private const string AgentToken = "agent-token-fedcba9876543210";
    private readonly string _data = Directory.CreateTempSubdirectory("registry-auth-").FullName;
    private InProcessService _host = null!;

    public async Task InitializeAsync() =>
        _host = await InProcessService.StartAsync(_data, builder =>
        {
            builder.Configuration[PlatformTokens.TokenKey] = Token;
            builder.Configuration[PlatformTokens.AgentTokenKey] = AgentToken;
            builder.AddSessionRegistry();
            builder.Services.Configure<RegistryOptions>(o => o.DataDirectory = _data);
        }, app => app.MapSessionRegistry());

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        try { Directory.Delete(_data, recursive: true); } catch (IOException) { }
    }

    private Registry.V1.SessionRegistry.SessionRegistryClient Client() => new(_host.NewChannel());

    private static RegisterSessionRequest Session(string instance) => new() { Workload = "auth", Instance = instance, Node = "n" };

    [Fact]
    public async Task A_call_without_a_token_or_with_a_wrong_one_is_unauthenticated_and_the_answer_names_no_token()
    {
        var client = Client();
        var missing = await Assert.ThrowsAsync<RpcException>(() => client.ListSessionsAsync(new ListSessionsRequest()).ResponseAsync);
        Assert.Equal(StatusCode.Unauthenticated, missing.StatusCode);
        Assert.Contains("authorization: Bearer", missing.Status.Detail, StringComparison.Ordinal);

        var wrong = await Assert.ThrowsAsync<RpcException>(() => client.RegisterSessionAsync(Session("wrong"), Bearer(Token + "x")).ResponseAsync);
        Assert.Equal(StatusCode.Unauthenticated, wrong.StatusCode);
        Assert.DoesNotContain(Token, wrong.Status.Detail, StringComparison.Ordinal);
        // Nothing was done for the refused calls.
        var listed = await client.ListSessionsAsync(new ListSessionsRequest(), Bearer(Token));
        Assert.Empty(listed.Sessions);

        // A stream is refused the same way.
        using var watch = client.WatchSessions(new WatchSessionsRequest());
        var refused = await Assert.ThrowsAsync<RpcException>(() => watch.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(StatusCode.Unauthenticated, refused.StatusCode);
    }

    [Fact]
    public async Task The_platform_token_opens_every_call_and_the_health_service_needs_none()
    {
        var client = Client();
        var session = await client.RegisterSessionAsync(Session("full"), Bearer(Token));
        Assert.Single((await client.ListSessionsAsync(new ListSessionsRequest(), Bearer(Token))).Sessions, s => s.Id == session.Id);

        var health = new Grpc.Health.V1.Health.HealthClient(_host.NewChannel());
        Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new Grpc.Health.V1.HealthCheckRequest())).Status);
    }

    /// <summary>The token the launcher would give instance <paramref name="instance"/>.</summary>
    private string AgentTokenOf(string instance) => _host.Services.GetRequiredService<PlatformTokens>().AgentTokenFor(instance)!;

    [Fact]
    public async Task An_agents_token_keeps_its_own_session_and_is_denied_everything_else()
    {
        var client = Client();
        var agent = AgentTokenOf("agent");
        Assert.StartsWith("agent.agent.", agent, StringComparison.Ordinal);
        var session = await client.RegisterSessionAsync(Session("agent"), Bearer(agent));
        await client.HeartbeatAsync(new HeartbeatRequest { Ids = { session.Id } }, Bearer(agent));
        Assert.Equal(session.Id, (await client.GetSessionAsync(new GetSessionRequest { Id = session.Id }, Bearer(agent))).Id);

        var denied = await Assert.ThrowsAsync<RpcException>(() => client.ListSessionsAsync(new ListSessionsRequest(), Bearer(agent)).ResponseAsync);
        Assert.Equal(StatusCode.PermissionDenied, denied.StatusCode);
        Assert.Contains("ListSessions", denied.Status.Detail, StringComparison.Ordinal);

        // Another instance's session, or a session of another instance registered with this token: denied.
        var other = await client.RegisterSessionAsync(Session("other"), Bearer(Token));
        foreach (var call in new Func<Task>[]
        {
            () => client.EndSessionAsync(new EndSessionRequest { Id = other.Id }, Bearer(agent)).ResponseAsync,
            () => client.HeartbeatAsync(new HeartbeatRequest { Ids = { other.Id } }, Bearer(agent)).ResponseAsync,
            () => client.RegisterSessionAsync(Session("other"), Bearer(agent)).ResponseAsync,
            () => client.RegisterSessionsAsync(new RegisterSessionsRequest { Requests = { Session("agent") } }, Bearer(agent)).ResponseAsync, // the Launcher's
        })
            Assert.Equal(StatusCode.PermissionDenied, (await Assert.ThrowsAsync<RpcException>(call)).StatusCode);
        // The key itself, or a token with its instance changed, is no token at all.
        foreach (var forged in new[] { AgentToken, agent.Replace("agent.agent.", "agent.other.", StringComparison.Ordinal) })
            Assert.Equal(StatusCode.Unauthenticated, (await Assert.ThrowsAsync<RpcException>(() => client.GetSessionAsync(new GetSessionRequest { Id = other.Id }, Bearer(forged)).ResponseAsync)).StatusCode);

        await client.EndSessionAsync(new EndSessionRequest { Id = session.Id }, Bearer(agent));
    }

    [Fact]
    public async Task A_platform_client_made_by_AddPlatformGrpcClient_sends_the_configured_token()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            [PlatformTokens.TokenKey] = Token,
            ["services:registry:grpc:0"] = _host.Address,
        }).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddServiceDiscovery();
        services.ConfigureHttpClientDefaults(http => http.AddServiceDiscovery()); // as AddServiceDefaults does
        services.AddPlatformGrpcClient<Registry.V1.SessionRegistry.SessionRegistryClient>("registry");
        await using var provider = services.BuildServiceProvider();

        var client = provider.GetRequiredService<Registry.V1.SessionRegistry.SessionRegistryClient>();
        var session = await client.RegisterSessionAsync(Session("by-client"));

        Assert.Equal("by-client", session.Instance);
    }
}
