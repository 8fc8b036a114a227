using System.Reflection;
using DotNet.Testcontainers.Builders;
using DotNet.Testcontainers.Configurations;
using DotNet.Testcontainers.Containers;
using DotNet.Testcontainers.Networks;
using DotNet.Testcontainers.Volumes;
using Grpc.Health.V1;
using Platform.Testing;

namespace Platform.Containers.Tests;

/// <summary>
/// The platform's images as Testcontainers containers on a Docker network of the test's own. Testcontainers' reaper
/// (Ryuk) is off: its image cannot be pulled here. Everything is removed explicitly when the test ends: containers,
/// network, volumes.
/// </summary>
public sealed class PlatformContainers : IAsyncDisposable
{
    public const string Token = "container-test-token";
    private static readonly string Root = AppHostProcess.RepositoryRoot(typeof(PlatformContainers).Assembly);
    private readonly string _id = Guid.NewGuid().ToString("N")[..8];
    private readonly List<IContainer> _containers = [];
    private readonly List<IVolume> _volumes = [];

    static PlatformContainers()
    {
        // Testcontainers speaks Docker API 1.44; Debian's docker.io (20.10) serves 1.41 at most. The engine's own
        // version, unless DOCKER_API_VERSION says otherwise; set before Testcontainers reads its settings.
        if (Environment.GetEnvironmentVariable("DOCKER_API_VERSION") is null && Output("docker", ["version", "--format", "{{.Server.APIVersion}}"]) is { Length: > 0 } version)
            Environment.SetEnvironmentVariable("DOCKER_API_VERSION", version.Trim());
        TestcontainersSettings.ResourceReaperEnabled = false;
    }

    private static string Output(string executable, string[] args)
    {
        try
        {
            var start = new System.Diagnostics.ProcessStartInfo(executable, args) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = System.Diagnostics.Process.Start(start)!;
            var text = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return process.ExitCode == 0 ? text : "";
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return ""; // no docker command: Testcontainers says what is missing
        }
    }

    public INetwork Network { get; private set; } = null!;

    public static readonly Dictionary<string, int> Ports = new() { ["registry"] = 5101, ["launcher"] = 5111, ["monitor"] = 5121, ["supervisor"] = 5131 };

    public static async Task<PlatformContainers> CreateAsync()
    {
        await EnsureImagesAsync();
        await RemoveAsync("platform-test-"); // what an earlier run that was killed left
        var platform = new PlatformContainers();
        platform.Network = new NetworkBuilder().WithName($"platform-test-{platform._id}-network").Build();
        await platform.Network.CreateAsync();
        return platform;
    }

    /// <summary>The images, built by eng/build-images.sh --local-base when one is missing (eng/test.sh builds them
    /// before the tests; this is for a test run on its own).</summary>
    public static async Task EnsureImagesAsync()
    {
        foreach (var service in Ports.Keys)
        {
            if (await RunAsync("docker", ["image", "inspect", $"platform/{service}:latest"]) == 0) continue;
            Assert.Equal(0, await RunAsync(Path.Combine(Root, "eng", "build-images.sh"), ["--local-base"], TimeSpan.FromMinutes(20)));
            break;
        }
    }

    /// <summary>PostgreSQL in a container (platform/postgres-test:15, built here from postgres/Dockerfile on the local
    /// base when missing), once it accepts connections.</summary>
    public async Task<IContainer> StartPostgresAsync(string alias)
    {
        if (await RunAsync("docker", ["image", "inspect", "platform/postgres-test:15"]) != 0)
            Assert.Equal(0, await RunAsync("docker", ["build", "-q", "-t", "platform/postgres-test:15", Path.Combine(AppContext.BaseDirectory, "postgres")], TimeSpan.FromMinutes(10)));
        var container = new ContainerBuilder("platform/postgres-test:15")
            .WithName($"platform-test-{_id}-{alias}")
            .WithNetwork(Network)
            .WithNetworkAliases(alias)
            .Build();
        _containers.Add(container);
        await container.StartAsync();
        await Eventually.ValueAsync(async () => (await container.ExecAsync(["/usr/lib/postgresql/15/bin/pg_isready", "-q"])).ExitCode, code => code == 0,
            TimeSpan.FromSeconds(60), "PostgreSQL accepting connections");
        return container;
    }

    public async Task<IVolume> VolumeAsync(string name)
    {
        var volume = new VolumeBuilder().WithName($"platform-test-{_id}-{name}").Build();
        await volume.CreateAsync();
        _volumes.Add(volume);
        return volume;
    }

    /// <summary>A platform service's container, started, once its grpc.health.v1 answers SERVING on its mapped port.</summary>
    public async Task<IContainer> StartServiceAsync(string service, string alias, IReadOnlyDictionary<string, string> environment, IVolume? data = null)
    {
        var port = Ports[service];
        var builder = new ContainerBuilder($"platform/{service}:latest")
            .WithName($"platform-test-{_id}-{alias}")
            .WithNetwork(Network)
            .WithNetworkAliases(alias)
            .WithPortBinding(port, assignRandomHostPort: true)
            .WithEnvironment("Kestrel__Endpoints__grpc__Url", $"http://0.0.0.0:{port}")
            .WithEnvironment("Kestrel__Endpoints__http__Url", $"http://0.0.0.0:{port + 1}")
            .WithEnvironment("Platform__Token", Token)
            .WithEnvironment("Platform__AgentToken", "container-test-agent-token")
            .WithEnvironment("Logging__Console__FormatterOptions__SingleLine", "true")
            .WithEnvironment(environment.ToDictionary())
            .WithCleanUp(true);
        if (data is not null) builder = builder.WithVolumeMount(data, "/data");
        var container = builder.Build();
        _containers.Add(container);
        await container.StartAsync();
        await WaitServingAsync(container, service);
        return container;
    }

    public static string GrpcUrl(IContainer container, string service) => $"http://127.0.0.1:{container.GetMappedPublicPort(Ports[service])}";

    public static async Task WaitServingAsync(IContainer container, string service)
    {
        try
        {
            await Eventually.ValueAsync(() => AppHostProcess.CheckHealthAsync(GrpcUrl(container, service)),
                s => s == HealthCheckResponse.Types.ServingStatus.Serving, TimeSpan.FromSeconds(60), $"{service} SERVING in its container");
        }
        catch (TimeoutException)
        {
            throw new InvalidOperationException($"{service} did not become SERVING; its output:\n{await LogsAsync(container)}");
        }
    }

    public static async Task<string> LogsAsync(IContainer container)
    {
        var (stdout, stderr) = await container.GetLogsAsync();
        return stdout + stderr;
    }

    public static async Task<int> RunAsync(string executable, string[] args, TimeSpan? timeout = null)
    {
        var start = new System.Diagnostics.ProcessStartInfo(executable, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = System.Diagnostics.Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(timeout ?? TimeSpan.FromMinutes(2));
        Console.WriteLine(await output + await error);
        return process.ExitCode;
    }

    /// <summary>Removes every container, network and volume whose name starts with <paramref name="prefix"/>, through
    /// the docker command (Testcontainers stops its containers, but without its reaper leaves them and their volumes).</summary>
    public static async Task RemoveAsync(string prefix)
    {
        var containers = Output("docker", ["ps", "-aq", "--filter", $"name={prefix}"]).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (containers.Length > 0) await RunAsync("docker", ["rm", "-f", .. containers]);
        var networks = Output("docker", ["network", "ls", "-q", "--filter", $"name={prefix}"]).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (networks.Length > 0) await RunAsync("docker", ["network", "rm", .. networks]);
        var volumes = Output("docker", ["volume", "ls", "-q", "--filter", $"name={prefix}"]).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (volumes.Length > 0) await RunAsync("docker", ["volume", "rm", "-f", .. volumes]);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var container in _containers)
        {
            try { await container.DisposeAsync(); } catch (Exception e) { Console.WriteLine($"removing a container: {e.Message}"); }
        }
        try { await Network.DeleteAsync(); } catch (Exception e) { Console.WriteLine($"removing the network: {e.Message}"); }
        foreach (var volume in _volumes)
        {
            try { await volume.DeleteAsync(); } catch (Exception e) { Console.WriteLine($"removing a volume: {e.Message}"); }
        }
        await RemoveAsync($"platform-test-{_id}-");
    }
}
