using Microsoft.Extensions.Options;
using Platform.SessionRegistry.Store;
using Platform.ServiceDefaults;

namespace Platform.SessionRegistry;

public static class Extensions
{
    /// <summary>Registers the SessionRegistry's own services: options, the SQLite store, the engine and the sweeper.</summary>
    public static IHostApplicationBuilder AddSessionRegistry(this IHostApplicationBuilder builder)
    {
        // No dependencies: the registry is the root of the platform.
        builder.Services.Configure<RegistryOptions>(builder.Configuration.GetSection(RegistryOptions.Section));
        builder.Services.AddSingleton<ISessionStore>(sp =>
        {
            var directory = DataDirectory.Resolve(builder.Configuration, sp.GetRequiredService<IOptions<RegistryOptions>>().Value.DataDirectory);
            return new SqliteSessionStore(Path.Combine(directory, "registry.db"));
        });
        builder.Services.AddSingleton<RegistryEngine>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<RegistryEngine>());
        builder.Services.AddSingleton<ExpirySweeper>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ExpirySweeper>());
        builder.Services.AddHostedService<IdleMemoryTrimmer>();
        builder.Services.AddHealthChecks().AddCheck<StoreHealthCheck>("store");
        return builder;
    }

    public static WebApplication MapSessionRegistry(this WebApplication app)
    {
        app.MapGrpcService<SessionRegistryService>();
        return app;
    }
}
