using Microsoft.Extensions.Options;
using Platform.SessionRegistry.Store;
using Platform.ServiceDefaults;

namespace Platform.SessionRegistry;

public static class Extensions
{
    /// <summary>The connection string that puts the registry on PostgreSQL (<c>ConnectionStrings__registry-store</c> in
    /// the environment, as Aspire's WithReference to a database named so gives it).</summary>
    public const string StoreConnectionName = "registry-store";

    /// <summary>Registers the SessionRegistry's own services: options, the store (PostgreSQL when a connection string
    /// names one, else SQLite in the data directory), the engine and the sweeper.</summary>
    public static IHostApplicationBuilder AddSessionRegistry(this IHostApplicationBuilder builder)
    {
        // No dependencies: the registry is the root of the platform.
        builder.Services.Configure<RegistryOptions>(builder.Configuration.GetSection(RegistryOptions.Section));
        builder.Services.AddSingleton<ISessionStore>(sp =>
        {
            var logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger("Platform.SessionRegistry.Store");
            if (builder.Configuration.GetConnectionString(StoreConnectionName) is { Length: > 0 } connectionString)
            {
                logger.LogInformation("Store: PostgreSQL (connection string {Name})", StoreConnectionName);
                // The store's calls are synchronous (the writer's batches, reads in the handlers), and on PostgreSQL each
                // waits for a network round trip: with the thread pool's floor at the core count, a few of them at once
                // starved the pool, and a renewal waited seconds for a thread (ReplicaTests, two replicas in one test
                // process on two cores). More threads are kept ready instead of injected one every half second.
                ThreadPool.GetMinThreads(out var workers, out var io);
                ThreadPool.SetMinThreads(Math.Max(workers, 32), io);
                return new PostgresSessionStore(connectionString);
            }
            var directory = DataDirectory.Resolve(builder.Configuration, sp.GetRequiredService<IOptions<RegistryOptions>>().Value.DataDirectory);
            logger.LogInformation("Store: SQLite in {Directory}", directory);
            return new SqliteSessionStore(Path.Combine(directory, "registry.db"));
        });
        builder.Services.AddSingleton<RegistryEngine>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<RegistryEngine>());
        builder.Services.AddSingleton<ExpirySweeper>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ExpirySweeper>());
        builder.Services.AddHealthChecks().AddCheck<StoreHealthCheck>("store");
        return builder;
    }

    public static WebApplication MapSessionRegistry(this WebApplication app)
    {
        app.MapGrpcService<SessionRegistryService>();
        return app;
    }
}
