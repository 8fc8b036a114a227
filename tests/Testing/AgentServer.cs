using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Platform.Testing;

/// <summary>
/// A bare web server on a free loopback port standing in for an agent a probe looks at (an HTTP health endpoint, a
/// gRPC health server): none of the platform's defaults, unlike <see cref="InProcessService"/>.
/// </summary>
public sealed class AgentServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private AgentServer(WebApplication app, string address)
    {
        _app = app;
        Address = address;
    }

    /// <summary>"http://127.0.0.1:PORT".</summary>
    public string Address { get; }

    public static async Task<AgentServer> StartAsync(Action<WebApplication> map, Action<IServiceCollection>? services = null, bool http2Only = false)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0, o => o.Protocols = http2Only ? HttpProtocols.Http2 : HttpProtocols.Http1AndHttp2));
        services?.Invoke(builder.Services);
        var app = builder.Build();
        map(app);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses
            .First(a => a.StartsWith("http://127.0.0.1:", StringComparison.Ordinal));
        return new AgentServer(app, address);
    }

    public Task StopAsync() => _app.StopAsync();

    public ValueTask DisposeAsync() => _app.DisposeAsync();
}
