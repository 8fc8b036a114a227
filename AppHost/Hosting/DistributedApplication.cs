using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Platform.AppHost.Hosting;

/// <summary>
/// The running app: the engine (<see cref="Orchestrator"/>) inside a Generic Host, whose console lifetime turns
/// Ctrl+C and SIGTERM into an orderly stop of every resource. Shaped like Aspire's DistributedApplication.
/// </summary>
public sealed class DistributedApplication
{
    public const string StateDirectoryVariable = "PLATFORM_STATE_DIR";

    internal DistributedApplication(AppModel model, AppHostOptions options)
    {
        Model = model;
        Options = options;
    }

    public AppModel Model { get; }

    public AppHostOptions Options { get; }

    public static DistributedApplicationBuilder CreateBuilder(string[] args)
    {
        // A bad app model (unknown reference, WaitFor cycle) is the developer's mistake in Program.cs: one clear
        // line and exit code 1, not a stack trace.
        AppDomain.CurrentDomain.UnhandledException += (_, e) =>
        {
            if (e.ExceptionObject is not AppModelException error) return;
            Console.Error.WriteLine($"apphost: error: {error.Message}");
            Environment.Exit(1);
        };

        var appHost = Assembly.GetEntryAssembly() ?? typeof(DistributedApplication).Assembly;
        var stateDirectory = Environment.GetEnvironmentVariable(StateDirectoryVariable);
        if (string.IsNullOrWhiteSpace(stateDirectory))
        {
            var repoRoot = appHost.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "PlatformRepoRoot")?.Value
                ?? Directory.GetCurrentDirectory();
            stateDirectory = Path.Combine(repoRoot, ".platform");
        }

        var options = new AppHostOptions
        {
            StateDirectory = Path.GetFullPath(stateDirectory),
            Color = !Console.IsOutputRedirected && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR")),
            StopAdoptedOrphans = true,
        };
        return new DistributedApplicationBuilder(args, options, appHost);
    }

    /// <summary>Runs until Ctrl+C or SIGTERM; returns 0 after a clean stop, 1 when a resource could not start.</summary>
    public async Task<int> RunAsync()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = Options.ShutdownTimeout);
        builder.Services.AddSingleton(sp =>
        {
            var lifetime = sp.GetRequiredService<IHostApplicationLifetime>();
            return new Orchestrator(Model, Options, _ => lifetime.StopApplication());
        });
        builder.Services.AddHostedService(sp => sp.GetRequiredService<Orchestrator>());

        using var host = builder.Build();
        var orchestrator = host.Services.GetRequiredService<Orchestrator>();
        await host.RunAsync();
        await orchestrator.DisposeAsync();
        return orchestrator.Failure is null ? 0 : 1;
    }

    public void Run() => Environment.ExitCode = RunAsync().GetAwaiter().GetResult();
}
