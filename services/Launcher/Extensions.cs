using Microsoft.Extensions.Options;

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
            var directory = sp.GetRequiredService<IOptions<LauncherOptions>>().Value.DataDirectory
                ?? builder.Configuration["PLATFORM_DATA_DIR"] ?? Path.Combine(Directory.GetCurrentDirectory(), "data");
            return new InstanceStore(Path.Combine(directory, "launcher.db"));
        });
        builder.Services.AddSingleton<InstanceManager>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<InstanceManager>());
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
