using System.Reflection;

namespace Platform.AppHost.Hosting;

/// <summary>How an endpoint speaks: gRPC gets HTTP/2 cleartext, /health and /alive get HTTP/1.1 (DESIGN.md §7).</summary>
public enum EndpointProtocol
{
    Http1,
    Http2,
}

/// <summary>A named endpoint of a resource. The engine picks a free loopback port for it.</summary>
public sealed record EndpointAnnotation(string Name, EndpointProtocol Protocol);

/// <summary>What the engine runs for a resource: a command line and its working directory.</summary>
public sealed record ProcessLaunch(string FileName, IReadOnlyList<string> Arguments, string WorkingDirectory);

/// <summary>
/// A resource of the app model: plain data that the engine (<see cref="Orchestrator"/>) runs. Names are kebab-case
/// and are the names references resolve by (<c>services__{name}__{endpoint}__0</c>), as in Aspire and Kubernetes.
/// </summary>
public abstract class Resource(string name)
{
    public string Name { get; } = name;

    public List<EndpointAnnotation> Endpoints { get; } = [];

    public Dictionary<string, string> Environment { get; } = new(StringComparer.Ordinal);

    /// <summary>Resources whose endpoints this one is told about (service discovery variables).</summary>
    public List<string> References { get; } = [];

    /// <summary>Resources that must be healthy before this one starts.</summary>
    public List<string> WaitFors { get; } = [];

    /// <summary>HTTP path probed on the <c>http</c> endpoint to tell health; null: healthy while running.</summary>
    public string? HealthPath { get; set; }

    /// <summary>A custom health check (tests and executables); takes precedence over <see cref="HealthPath"/>.</summary>
    public Func<CancellationToken, Task<bool>>? HealthCheck { get; set; }

    /// <summary>Time between SIGTERM and SIGKILL when the resource is stopped.</summary>
    public TimeSpan StopGrace { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Resolves the command line; throws <see cref="ResourceLaunchException"/> when it cannot.</summary>
    public abstract ProcessLaunch ResolveLaunch();
}

/// <summary>A .NET project of this repository, started from its build output (never through <c>dotnet run</c>).</summary>
public sealed class ProjectResource(string name, string projectName, string? assemblyPath) : Resource(name)
{
    public string ProjectName { get; } = projectName;

    /// <summary>The project's built assembly, from the AppHost's build metadata; null if it is not referenced.</summary>
    public string? AssemblyPath { get; } = assemblyPath;

    public override ProcessLaunch ResolveLaunch()
    {
        if (AssemblyPath is null)
            throw new ResourceLaunchException($"project '{ProjectName}' is not referenced by the AppHost (add a ProjectReference to AppHost/Platform.AppHost.csproj)");
        if (!File.Exists(AssemblyPath))
            throw new ResourceLaunchException($"project '{ProjectName}' has no build output at {AssemblyPath} (did it fail to build?)");
        return new ProcessLaunch(DotnetHost.Path, [AssemblyPath], System.IO.Path.GetDirectoryName(AssemblyPath)!);
    }

    /// <summary>Build output of the projects the AppHost references, recorded at build time (AppHost.csproj).</summary>
    public static string? FindAssembly(Assembly appHostAssembly, string projectName) =>
        appHostAssembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == $"PlatformProject:{projectName}")?.Value;
}

/// <summary>Any executable (a sample agent, a test process).</summary>
public sealed class ExecutableResource(string name, string command, string workingDirectory, IReadOnlyList<string> args) : Resource(name)
{
    public string Command { get; } = command;
    public string WorkingDirectory { get; } = workingDirectory;
    public IReadOnlyList<string> Args { get; } = args;

    public override ProcessLaunch ResolveLaunch()
    {
        var path = Command.Contains('/') ? Command : FindOnPath(Command);
        if (path is null || !File.Exists(path))
            throw new ResourceLaunchException($"executable '{Command}' was not found");
        if (!Directory.Exists(WorkingDirectory))
            throw new ResourceLaunchException($"working directory '{WorkingDirectory}' does not exist");
        return new ProcessLaunch(path, Args, WorkingDirectory);
    }

    private static string? FindOnPath(string command) =>
        (System.Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => System.IO.Path.Combine(dir, command))
            .FirstOrDefault(File.Exists);
}

/// <summary>A resource could not be launched at all (as opposed to starting and then exiting).</summary>
public sealed class ResourceLaunchException(string message) : Exception(message);

/// <summary>The app model is invalid: an unknown resource in a reference, a cycle in WaitFor, a duplicate name.</summary>
public sealed class AppModelException(string message) : Exception(message);

/// <summary>Finds the <c>dotnet</c> host that starts framework-dependent projects.</summary>
internal static class DotnetHost
{
    public static string Path { get; } = Find();

    private static string Find()
    {
        // Set by the SDK for `dotnet run`, `dotnet test` and MSBuild; otherwise the muxer that runs us, or PATH.
        var fromSdk = System.Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(fromSdk) && File.Exists(fromSdk)) return fromSdk;
        var self = System.Environment.ProcessPath;
        if (self is not null && System.IO.Path.GetFileNameWithoutExtension(self) == "dotnet") return self;
        var root = System.Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (!string.IsNullOrEmpty(root) && File.Exists(System.IO.Path.Combine(root, "dotnet"))) return System.IO.Path.Combine(root, "dotnet");
        return (System.Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => System.IO.Path.Combine(dir, "dotnet"))
            .FirstOrDefault(File.Exists) ?? "dotnet";
    }
}
