using System.Reflection;
using Platform.AppHost;

namespace Aspire.Hosting;

/// <summary>
/// How a platform service runs under the AppHost, on top of what <c>AddProject</c> gives (its <c>grpc</c> HTTP/2 and
/// <c>http</c> HTTP/1.1 endpoints come from the service's own Kestrel settings in appsettings.json).
/// </summary>
public static class PlatformServiceExtensions
{
    /// <summary>
    /// A platform service: started from its build output, a data directory under the AppHost's state directory, the run's
    /// bearer tokens,
    /// OpenTelemetry exported promptly, <c>/health</c> on the <c>http</c> endpoint as its health (what WaitFor waits
    /// on; noticed within 50 ms while the service starts), and the restart policy Aspire lacks.
    /// </summary>
    public static IResourceBuilder<ProjectResource> AsPlatformService(this IResourceBuilder<ProjectResource> builder)
    {
        var state = PlatformState.For(builder.ApplicationBuilder);
        return builder
            .RunFromBuildOutput()
            .WithEnvironment(PlatformState.DataDirectoryVariable, state.DataDirectory(builder.Resource.Name))
            // Every call needs the run's token (ServiceDefaults' AuthenticationInterceptor); the agent token is what the
            // launcher hands its instances and the registry accepts for their sessions.
            .WithEnvironment("Platform__Token", state.TokenParameter ?? throw new InvalidOperationException("call WithPlatformState() on the builder first"))
            .WithEnvironment("Platform__AgentToken", state.AgentTokenParameter!)
            .WithEnvironment(context =>
            {
                // Single-line console logs read well in the dashboard's console view.
                context.EnvironmentVariables["Logging__Console__FormatterName"] = "simple";
                context.EnvironmentVariables["Logging__Console__FormatterOptions__SingleLine"] = "true";
                // gRPC server spans (docs/architecture.md §6), and telemetry that shows up within a second.
                context.EnvironmentVariables["OTEL_DOTNET_EXPERIMENTAL_ASPNETCORE_ENABLE_GRPC_INSTRUMENTATION"] = "true";
                context.EnvironmentVariables["OTEL_BSP_SCHEDULE_DELAY"] = "1000";
                context.EnvironmentVariables["OTEL_BLRP_SCHEDULE_DELAY"] = "1000";
                context.EnvironmentVariables["OTEL_METRIC_EXPORT_INTERVAL"] = "1000";
                context.EnvironmentVariables["OTEL_TRACES_SAMPLER"] = "always_on";
                // Aspire asks for in-memory retries of failed exports. DCP stops the dashboard before the services, and
                // on Ctrl+C each service's exporters then retried against it until their 10 s timeout, holding its
                // exit until DCP SIGKILLed it 6 s later. A local dashboard that does not answer is gone: what a
                // service has left to export is dropped, and it exits at once.
                context.EnvironmentVariables.Remove("OTEL_DOTNET_EXPERIMENTAL_OTLP_RETRY");
            })
            .WithPromptHttpHealthCheck("/health", endpointName: "http")
            .WithRestartPolicy();
    }

    /// <summary>Run the services' Native AOT builds (artifacts/publish/SERVICE/, written by eng/publish-native.sh)
    /// instead of their JIT build output: <c>--native</c>, or <c>Platform__Native=true</c>.</summary>
    public const string NativeSetting = "Platform:Native";

    /// <summary>
    /// Launches the project's own build output (its native apphost, or <c>dotnet X.dll</c>) instead of Aspire's default
    /// <c>dotnet run --project X --no-build</c>, a ~120 MB parent process per service that only waits for its child.
    /// The resource stays a project resource (its <c>Projects.*</c> type and the dashboard's project view); this is
    /// the <see cref="ExecutableAnnotation"/> that Aspire consults for projects. The output path is recorded at build
    /// time by eng/ProjectOutputs.targets, so it follows the configuration the AppHost was built with. With
    /// <see cref="NativeSetting"/> the service's Native AOT build runs instead: it serves in about 0.1 s where the JIT
    /// build takes 0.4-0.5 s, and holds about half the memory (docs/architecture.md §6).
    /// </summary>
    public static IResourceBuilder<ProjectResource> RunFromBuildOutput(this IResourceBuilder<ProjectResource> builder)
    {
        var metadata = builder.Resource.GetProjectMetadata();
        var assemblyName = Path.GetFileNameWithoutExtension(metadata.ProjectPath);
        var dll = BuildOutput.Find(assemblyName)
            ?? throw new DistributedApplicationException(
                $"project '{assemblyName}' has no recorded build output: reference it from AppHost/Platform.AppHost.csproj");
        if (string.Equals(builder.ApplicationBuilder.Configuration[NativeSetting], "true", StringComparison.OrdinalIgnoreCase))
        {
            var aot = BuildOutput.NativeBuild(assemblyName)
                ?? throw new DistributedApplicationException(
                    $"--native: there is no Native AOT build of {assemblyName} under artifacts/publish/; run eng/publish-native.sh first");
            if (File.Exists(dll) && File.GetLastWriteTimeUtc(aot) < File.GetLastWriteTimeUtc(dll))
                Console.WriteLine($"warning: the Native AOT build {aot} is older than the build output {dll}; eng/publish-native.sh brings it up to date");
            return builder.WithAnnotation(new ExecutableAnnotation { Command = aot, WorkingDirectory = Path.GetDirectoryName(aot)! },
                ResourceAnnotationMutationBehavior.Replace);
        }
        var apphost = Path.ChangeExtension(dll, null); // the SDK's native launcher of the JIT build
        var useApphost = File.Exists(apphost);
        builder.WithAnnotation(new ExecutableAnnotation
        {
            Command = useApphost ? apphost : "dotnet",
            WorkingDirectory = Path.GetDirectoryName(dll)!,
        }, ResourceAnnotationMutationBehavior.Replace);
        if (!useApphost) builder.WithArgs(dll);
        // Under the AppHost a JIT build starts with tiered compilation, the runtime's default (Release builds turn it
        // off for burst throughput, Directory.Build.props), without dynamic PGO's instrumented tier, and with hot
        // methods re-compiled only after 2 s without new ones (the runtime waits 100 ms). What is not ReadyToRun is
        // compiled quickly first instead of fully optimised, and nothing is compiled twice while the service starts:
        // a service serves on about 0.3 s of CPU instead of 0.45, and the four, started in a chain of waits beside
        // DCP and the dashboard on two cores, are ready sooner (bench apphost-startup). The first burst on a fresh
        // service is slower instead (bench peers, which runs the services without the AppHost, keeps the build's
        // setting). The agents the Launcher starts get none of this: it passes them only their own environment.
        return builder.WithEnvironment("DOTNET_TieredCompilation", "1").WithEnvironment("DOTNET_TieredPGO", "0")
            .WithEnvironment("DOTNET_TC_CallCountingDelayMs", "2000");
    }
}

/// <summary>Build output paths of the projects the AppHost references (eng/ProjectOutputs.targets).</summary>
internal static class BuildOutput
{
    public static string? Find(string assemblyName) =>
        typeof(BuildOutput).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == $"PlatformProject:{assemblyName}")?.Value;

    /// <summary>The Native AOT build of a service, artifacts/publish/SERVICE/ASSEMBLY (eng/publish-native.sh), if there is one.</summary>
    public static string? NativeBuild(string assemblyName) =>
        RepositoryRoot is { } root && Path.Combine(root, "artifacts", "publish") is var publish && Directory.Exists(publish)
            ? Directory.EnumerateDirectories(publish).Select(d => Path.Combine(d, assemblyName)).FirstOrDefault(File.Exists)
            : null;

    public static string? RepositoryRoot =>
        typeof(BuildOutput).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "PlatformRepoRoot")?.Value;
}
