using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Platform.ServiceDefaults;

namespace Platform.Supervisor;

public static class Extensions
{
    /// <summary>Registers the Supervisor's own services: the workload store, the engine and its actors, the Launcher and
    /// Monitor clients behind circuit breakers, and health that says which dependency is down.</summary>
    public static IHostApplicationBuilder AddSupervisor(this IHostApplicationBuilder builder)
    {
        builder.Services.Configure<SupervisorOptions>(builder.Configuration.GetSection(SupervisorOptions.Section));
        builder.Services.AddSingleton(sp =>
        {
            var directory = DataDirectory.Resolve(builder.Configuration, sp.GetRequiredService<IOptions<SupervisorOptions>>().Value.DataDirectory);
            return new WorkloadStore(Path.Combine(directory, "supervisor.db"));
        });
        builder.Services.AddSingleton(sp => new ActingLock(Path.Combine(
            DataDirectory.Resolve(builder.Configuration, sp.GetRequiredService<IOptions<SupervisorOptions>>().Value.DataDirectory), "supervisor.lock")));
        builder.Services.AddPlatformGrpcClient<Launcher.V1.Launcher.LauncherClient>("launcher");
        builder.Services.AddPlatformGrpcClient<Registry.V1.SessionRegistry.SessionRegistryClient>("registry");
        var nodes = builder.Configuration[$"{SupervisorOptions.Section}:{nameof(SupervisorOptions.Nodes)}"] ?? "static";
        if (nodes is not ("static" or "registry"))
            throw new InvalidOperationException($"Supervisor:Nodes is '{nodes}'; it must be 'static' (one launcher, the \"launcher\" service) or 'registry' (the nodes launchers announce)");
        builder.Services.AddSingleton(sp => nodes == "registry"
            ? new NodeSet()
            : new NodeSet(new NodeClient("", "launcher", new Dictionary<string, string>(), 0, sp.GetRequiredService<Launcher.V1.Launcher.LauncherClient>(), sp.GetRequiredService<TimeProvider>())));
        builder.Services.AddPlatformGrpcClient<Monitor.V1.AgentMonitor.AgentMonitorClient>("monitor");
        builder.Services.AddSingleton<Dependencies>();
        builder.Services.AddSingleton<SupervisorEngine>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<SupervisorEngine>());
        var checks = builder.Services.AddHealthChecks().AddPlatformDependency("registry");
        // With nodes, the launchers are the nodes (their breakers and event streams, in "breakers"), not one service.
        if (nodes == "static") checks.AddPlatformDependency("launcher");
        checks.AddPlatformDependency("monitor")
            .Add(new HealthCheckRegistration("breakers", sp => sp.GetRequiredService<Dependencies>(), HealthStatus.Degraded, ["dependency"]))
            // A standby is not ready (grpc.health.v1 NOT_SERVING, /health 503): nothing should be sent to it. It is alive.
            .AddCheck<ActingHealthCheck>("acting");
        return builder;
    }

    public static WebApplication MapSupervisor(this WebApplication app)
    {
        app.MapGrpcService<SupervisorService>();
        return app;
    }
}
