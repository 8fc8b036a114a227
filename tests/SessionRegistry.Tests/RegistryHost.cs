using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Platform.Registry.V1;

namespace Platform.SessionRegistry.Tests;

/// <summary>
/// The real registry (the same registrations as its Program.cs) in this process, on a loopback port, over a real
/// SQLite file, with the clock the test chooses.
/// </summary>
public sealed class RegistryHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly List<GrpcChannel> _channels = [];

    private RegistryHost(WebApplication app, string address)
    {
        _app = app;
        Address = address;
    }

    public string Address { get; }

    public RegistryEngine Engine => _app.Services.GetRequiredService<RegistryEngine>();

    public IServiceProvider Services => _app.Services;

    public ExpirySweeper Sweeper => _app.Services.GetRequiredService<ExpirySweeper>();

    public static async Task<RegistryHost> StartAsync(string dataDirectory, TimeProvider? time = null, Action<RegistryOptions>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = dataDirectory, EnvironmentName = "Development" });
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http2));
        builder.AddServiceDefaults();
        builder.AddSessionRegistry();
        builder.Services.Configure<RegistryOptions>(o =>
        {
            o.DataDirectory = dataDirectory;
            configure?.Invoke(o);
        });
        if (time is not null) builder.Services.AddSingleton(time);

        var app = builder.Build();
        app.MapDefaultEndpoints();
        app.MapSessionRegistry();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new RegistryHost(app, address.Replace("[::1]", "127.0.0.1"));
    }

    /// <summary>A client on a channel of its own (a separate HTTP/2 connection).</summary>
    public Registry.V1.SessionRegistry.SessionRegistryClient NewClient()
    {
        var channel = GrpcChannel.ForAddress(Address);
        lock (_channels) _channels.Add(channel);
        return new Registry.V1.SessionRegistry.SessionRegistryClient(channel);
    }

    private bool _disposed;

    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var channel in _channels) channel.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
