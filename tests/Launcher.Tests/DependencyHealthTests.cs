using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Platform.Testing;

namespace Platform.Launcher.Tests;

/// <summary>
/// The launcher, as its own process, while the registry it depends on hangs: a listener that takes connections and
/// never answers. Its <c>/health</c> says so; its grpc.health.v1 probe (what the AppHost, DCP and Kubernetes ask) is
/// not held up by it.
/// </summary>
public sealed class DependencyHealthTests : IAsyncLifetime
{
    private readonly string _data = Directory.CreateTempSubdirectory("launcher-health-").FullName;
    private readonly TcpListener _hungRegistry = new(IPAddress.Loopback, 0);

    [Fact]
    public async Task A_hung_registry_shows_in_health_but_never_holds_up_the_grpc_probe()
    {
        _hungRegistry.Start(); // connections complete in the kernel's backlog; nothing ever answers them
        var registry = $"http://127.0.0.1:{((IPEndPoint)_hungRegistry.LocalEndpoint).Port}";
        await using var launcher = await ServiceProcess.StartAsync(typeof(InstanceManager).Assembly.Location, _data,
            new Dictionary<string, string> { ["services__registry__grpc__0"] = registry });

        // A dependency's check waits up to its own deadline (2 s) for an answer. The gRPC probe does not run it (a
        // dependency is at worst Degraded, which is SERVING), so it answers well inside a shorter deadline, each time.
        using var channel = GrpcChannel.ForAddress(launcher.GrpcUrl);
        var health = new Health.HealthClient(channel);
        Assert.True(Platform.ServiceDefaults.DependencyHealthCheck.Deadline > TimeSpan.FromSeconds(1.5));
        for (var i = 0; i < 3; i++)
        {
            var reply = await health.CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(1.5));
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, reply.Status);
        }

        // /health runs every check, the dependency's too, and names what is wrong.
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var report = JsonDocument.Parse(await http.GetStringAsync(launcher.HttpUrl + "/health"));
        var entry = report.RootElement.GetProperty("entries").GetProperty("dependency:registry");
        Assert.Equal("Degraded", entry.GetProperty("status").GetString());
        Assert.Contains("registry is unreachable: DeadlineExceeded", entry.GetProperty("description").GetString());
        Assert.Equal("Degraded", report.RootElement.GetProperty("status").GetString());
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        _hungRegistry.Dispose();
        try { Directory.Delete(_data, recursive: true); } catch (IOException) { }
        return Task.CompletedTask;
    }
}
