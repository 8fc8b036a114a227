using Grpc.Core;
using Platform.Launcher.V1;
using Platform.ServiceDefaults;
using Platform.Testing;
using static Platform.Testing.PlatformChannel;

namespace Platform.Launcher.Tests;

/// <summary>With authentication on, what the launcher gives its agents: their own token (PLATFORM_TOKEN), which may not
/// launch anything, and never the platform's token.</summary>
public sealed class AgentTokenTests : LauncherTestBase
{
    private const string Token = "platform-token-for-launcher-tests";
    private const string AgentToken = "agent-token-for-launcher-tests";

    protected override void Configure(Microsoft.Extensions.Configuration.IConfiguration configuration)
    {
        configuration[PlatformTokens.TokenKey] = Token;
        configuration[PlatformTokens.AgentTokenKey] = AgentToken;
    }

    protected override Metadata CleanupHeaders => Bearer(Token);

    [Fact]
    public async Task An_agent_gets_its_own_token_which_cannot_launch_and_never_the_platforms()
    {
        await GrpcAssert.StatusAsync(StatusCode.Unauthenticated, Client.LaunchAsync(new LaunchRequest { Template = "sleeper" }).ResponseAsync);

        var instance = await Client.LaunchAsync(new LaunchRequest { Template = "sleeper" }, Bearer(Token));
        var environ = await Eventually.ValueAsync(() => Task.FromResult(File.Exists($"/proc/{instance.Pid}/environ") ? File.ReadAllText($"/proc/{instance.Pid}/environ") : ""),
            e => e.Contains("PLATFORM_INSTANCE_ID", StringComparison.Ordinal), Timeout, "the agent's environment after its exec");
        var variables = environ.Split('\0');
        // Its own: bound to its instance id, not the key the launcher holds.
        var own = Assert.Single(variables, v => v.StartsWith("PLATFORM_TOKEN=", StringComparison.Ordinal))["PLATFORM_TOKEN=".Length..];
        Assert.StartsWith($"agent.{instance.Id}.", own, StringComparison.Ordinal);
        Assert.DoesNotContain(variables, v => v.Contains(Token, StringComparison.Ordinal) || v.Contains(AgentToken, StringComparison.Ordinal));

        await GrpcAssert.StatusAsync(StatusCode.PermissionDenied, Client.LaunchAsync(new LaunchRequest { Template = "sleeper" }, Bearer(own)).ResponseAsync);
    }
}
