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
        builder.Services.AddPlatformGrpcClient<Monitor.V1.AgentMonitor.AgentMonitorClient>("monitor");
        builder.Services.AddSingleton<Dependencies>();
        builder.Services.AddSingleton<SupervisorEngine>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<SupervisorEngine>());
        builder.Services.AddHealthChecks()
            .AddPlatformDependency("registry")
            .AddPlatformDependency("launcher")
            .AddPlatformDependency("monitor")
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
