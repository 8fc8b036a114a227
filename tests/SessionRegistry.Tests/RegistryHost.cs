using Grpc.Core.Interceptors;
using Microsoft.Extensions.DependencyInjection;
using Platform.Testing;

namespace Platform.SessionRegistry.Tests;

/// <summary>The real registry in this process, on a loopback port, over a real SQLite file (or a real PostgreSQL
/// database), with the test's clock.</summary>
public sealed class RegistryHost : IAsyncDisposable
{
    private readonly InProcessService _service;

    private RegistryHost(InProcessService service) => _service = service;

    public string Address => _service.Address;

    public IServiceProvider Services => _service.Services;

    public RegistryEngine Engine => Services.GetRequiredService<RegistryEngine>();

    public ExpirySweeper Sweeper => Services.GetRequiredService<ExpirySweeper>();

    /// <summary>The PostgreSQL database a data directory's registry is on (the tests on PostgreSQL put it here); a
    /// registry started again on the same data directory finds its store again.</summary>
    public static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> PostgresStores = new();

    public static async Task<RegistryHost> StartAsync(string dataDirectory, TimeProvider? time = null, Action<RegistryOptions>? configure = null) =>
        new(await InProcessService.StartAsync(dataDirectory, builder =>
        {
            if (PostgresStores.TryGetValue(dataDirectory, out var connectionString))
                builder.Configuration[$"ConnectionStrings:{Extensions.StoreConnectionName}"] = connectionString;
            builder.AddSessionRegistry();
            builder.Services.Configure<RegistryOptions>(o =>
            {
                o.DataDirectory = dataDirectory;
                configure?.Invoke(o);
            });
            if (time is not null) builder.Services.AddSingleton(time);
        }, app => app.MapSessionRegistry()));

    /// <summary>A client on a channel of its own (a separate HTTP/2 connection).</summary>
    public Registry.V1.SessionRegistry.SessionRegistryClient NewClient() => new(_service.NewChannel().Intercept(DefaultDeadline.Minute));

    public ValueTask DisposeAsync() => _service.DisposeAsync();
}
