using Microsoft.Extensions.Options;
using Platform.ServiceDefaults;

namespace Platform.Launcher;

public static class Extensions
{
    /// <summary>Registers the Launcher's own services: options, the instance store and the instance manager.</summary>
    public static IHostApplicationBuilder AddLauncher(this IHostApplicationBuilder builder)
    {
        builder.Services.AddHealthChecks().AddPlatformDependency("registry");
        builder.Services.Configure<LauncherOptions>(builder.Configuration.GetSection(LauncherOptions.Section));
        builder.Services.AddSingleton(sp =>
        {
            var directory = DataDirectory.Resolve(builder.Configuration, sp.GetRequiredService<IOptions<LauncherOptions>>().Value.DataDirectory);
            return new InstanceStore(Path.Combine(directory, "launcher.db"));
        });
        builder.Services.AddSingleton<Containment>();
        builder.Services.AddHealthChecks().Add(new Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckRegistration(
            "containment", sp => sp.GetRequiredService<Containment>(), Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Unhealthy, []));
        builder.Services.AddSingleton<InstanceManager>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<InstanceManager>());
        builder.Services.AddPlatformGrpcClient<Registry.V1.SessionRegistry.SessionRegistryClient>("registry");
        builder.Services.AddSingleton<SessionSync>();
        builder.Services.AddHostedService(sp =>
        {
            // Sessions follow instances: registered when one starts, ended when it exits.
            var sync = sp.GetRequiredService<SessionSync>();
            var manager = sp.GetRequiredService<InstanceManager>();
            if (sp.GetRequiredService<IOptions<LauncherOptions>>().Value.RegisterSessionBeforeStart) manager.RegisterBeforeStart = sync.TryRegisterNowAsync;
            manager.Started += (instance, attributes) => sync.QueueRegister(instance, attributes);
            manager.Ended += instance => sync.QueueEnd(instance, instance.HasExitCode ? $"exited with code {instance.ExitCode}" : instance.HasSignal ? $"ended by signal {instance.Signal}" : "exited");
            return sync;
        });
        builder.Services.AddHealthChecks().Add(new Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckRegistration(
            "sessions", sp => sp.GetRequiredService<SessionSync>(), Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Degraded, ["dependency"]));
        if (builder.Configuration.GetValue<bool>($"{LauncherOptions.Section}:{nameof(LauncherOptions.RegisterNode)}"))
        {
            builder.Services.AddSingleton<NodeRegistration>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<NodeRegistration>());
            builder.Services.AddHealthChecks().Add(new Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckRegistration(
                "node", sp => sp.GetRequiredService<NodeRegistration>(), Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Degraded, ["dependency"]));
        }
        builder.Services.AddSingleton<LogRotator>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<LogRotator>());
        return builder;
    }

    public static WebApplication MapLauncher(this WebApplication app)
    {
        app.MapGrpcService<LauncherService>();
        return app;
    }
}
