using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Platform.AppHost;

namespace Aspire.Hosting;

public static class PlatformStateExtensions
{
    /// <summary>Keeps <c>apphost.json</c> up to date (rewritten atomically on every change) for platformctl and scripts.</summary>
    public static IDistributedApplicationBuilder WithPlatformState(this IDistributedApplicationBuilder builder)
    {
        var state = PlatformState.For(builder);
        System.IO.Directory.CreateDirectory(state.Directory);
        builder.Services.TryAddSingleton(state);
        // Generated per run; secret parameters, so the dashboard masks them in the services' environment.
        state.TokenParameter = builder.AddParameter("platform-token", state.Token, secret: true);
        state.AgentTokenParameter = builder.AddParameter("platform-agent-token", state.AgentToken, secret: true);
        builder.Services.AddHostedService<StateFileWriter>();
        return builder;
    }
}
