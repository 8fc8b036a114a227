using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Platform.AgentMonitor.Probes;

namespace Platform.AgentMonitor;

public static class Extensions
{
    /// <summary>Registers the AgentMonitor's own services: the engine and its probe loop, probes' shared clients, tmux
    /// connections, registry discovery, and the loop's liveness check behind <c>/alive</c>.</summary>
    public static IHostApplicationBuilder AddAgentMonitor(this IHostApplicationBuilder builder)
    {
        builder.Services.Configure<MonitorOptions>(builder.Configuration.GetSection(MonitorOptions.Section));
        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<ProbeClients>();
        builder.Services.AddSingleton<TmuxServers>();
        builder.Services.AddSingleton<ProbeFactory>();
        builder.Services.AddSingleton<MonitorEngine>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<MonitorEngine>());
        builder.Services.AddPlatformGrpcClient<Registry.V1.SessionRegistry.SessionRegistryClient>("registry");
        builder.Services.AddHostedService<RegistryDiscovery>();
        builder.Services.AddHealthChecks()
            .AddPlatformDependency("registry")
            .Add(new HealthCheckRegistration("probe-loop", sp => sp.GetRequiredService<MonitorEngine>(), HealthStatus.Unhealthy, [Microsoft.Extensions.Hosting.Extensions.LiveTag]));
        return builder;
    }

    public static WebApplication MapAgentMonitor(this WebApplication app)
    {
        app.MapGrpcService<AgentMonitorService>();
        return app;
    }
}
