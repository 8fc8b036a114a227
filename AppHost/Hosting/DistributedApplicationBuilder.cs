using System.Reflection;

namespace Platform.AppHost.Hosting;

/// <summary>Builds the app model, in the shape of Aspire's <c>IDistributedApplicationBuilder</c>.</summary>
public sealed class DistributedApplicationBuilder
{
    private readonly List<Resource> _resources = [];
    private readonly Assembly _appHostAssembly;

    internal DistributedApplicationBuilder(string[] args, AppHostOptions options, Assembly appHostAssembly)
    {
        Args = args;
        Options = options;
        _appHostAssembly = appHostAssembly;
    }

    public string[] Args { get; }

    public AppHostOptions Options { get; }

    public IReadOnlyList<Resource> Resources => _resources;

    /// <summary>
    /// Adds a platform service project (by its project name, e.g. <c>Platform.SessionRegistry</c>). Every platform
    /// service has a <c>grpc</c> endpoint (HTTP/2) and an <c>http</c> endpoint (HTTP/1.1) that serves /health.
    /// </summary>
    public IResourceBuilder<ProjectResource> AddProject(string name, string projectName)
    {
        var resource = new ProjectResource(name, projectName, ProjectResource.FindAssembly(_appHostAssembly, projectName));
        resource.Endpoints.Add(new EndpointAnnotation("grpc", EndpointProtocol.Http2));
        resource.Endpoints.Add(new EndpointAnnotation("http", EndpointProtocol.Http1));
        resource.HealthPath = "/health";
        return Add(resource);
    }

    /// <summary>Adds an executable; healthy while running unless a health check is given.</summary>
    public IResourceBuilder<ExecutableResource> AddExecutable(string name, string command, string workingDirectory, params string[] args) =>
        Add(new ExecutableResource(name, command, workingDirectory, args));

    private ResourceBuilder<T> Add<T>(T resource) where T : Resource
    {
        _resources.Add(resource);
        return new ResourceBuilder<T>(resource, this);
    }

    /// <summary>Validates the model (throws <see cref="AppModelException"/>) and returns the application that runs it.</summary>
    public DistributedApplication Build() => new(AppModel.Validate(_resources), Options);
}

/// <summary>Settings of the engine itself.</summary>
public sealed record AppHostOptions
{
    /// <summary>Where each resource's data directory, the logs and apphost.json live (PLATFORM_STATE_DIR).</summary>
    public required string StateDirectory { get; init; }

    /// <summary>
    /// Restarts of a resource that exited unexpectedly (the Supervisor's policy library): 1 s doubling to 30 s, reset
    /// after a 30 s stable run; no restart limit (the engine gives up on <see cref="MaxFailedStarts"/> instead).
    /// </summary>
    public Platform.Restarts.RestartPolicy Restarts { get; init; } = DefaultRestarts;

    public static Platform.Restarts.RestartPolicy DefaultRestarts { get; } = new()
    {
        InitialBackoff = TimeSpan.FromSeconds(1),
        Multiplier = 2,
        MaxBackoff = TimeSpan.FromSeconds(30),
        StableAfter = TimeSpan.FromSeconds(30),
        MaxRestarts = int.MaxValue,
    };

    /// <summary>Exits of a resource that never became healthy before the AppHost gives up on it.</summary>
    public int MaxFailedStarts { get; init; } = 5;

    /// <summary>Colour the output prefixes (a terminal, and NO_COLOR unset).</summary>
    public bool Color { get; init; }

    /// <summary>Where resource output and the engine's messages go.</summary>
    public TextWriter Output { get; init; } = Console.Out;

    /// <summary>
    /// At shutdown, also stop every remaining child of this process (orphans adopted from resources). Only for the
    /// AppHost process itself, where every child is the platform's.
    /// </summary>
    public bool StopAdoptedOrphans { get; init; }

    /// <summary>Time to wait for stopping resources at shutdown before the host gives up.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>Chains annotations onto a resource: <c>WithReference</c>, <c>WaitFor</c>, <c>WithEnvironment</c>, ...</summary>
public interface IResourceBuilder<out T> where T : Resource
{
    T Resource { get; }

    DistributedApplicationBuilder ApplicationBuilder { get; }
}

internal sealed class ResourceBuilder<T>(T resource, DistributedApplicationBuilder applicationBuilder) : IResourceBuilder<T>
    where T : Resource
{
    public T Resource { get; } = resource;

    public DistributedApplicationBuilder ApplicationBuilder { get; } = applicationBuilder;
}

public static class ResourceBuilderExtensions
{
    /// <summary>Tells this resource where <paramref name="source"/>'s endpoints are (services__{name}__{endpoint}__0).</summary>
    public static IResourceBuilder<T> WithReference<T>(this IResourceBuilder<T> builder, IResourceBuilder<Resource> source) where T : Resource
    {
        builder.Resource.References.Add(source.Resource.Name);
        return builder;
    }

    /// <summary>Starts this resource only once <paramref name="dependency"/> is healthy.</summary>
    public static IResourceBuilder<T> WaitFor<T>(this IResourceBuilder<T> builder, IResourceBuilder<Resource> dependency) where T : Resource
    {
        builder.Resource.WaitFors.Add(dependency.Resource.Name);
        return builder;
    }

    public static IResourceBuilder<T> WithEnvironment<T>(this IResourceBuilder<T> builder, string name, string value) where T : Resource
    {
        builder.Resource.Environment[name] = value;
        return builder;
    }

    public static IResourceBuilder<T> WithHttpEndpoint<T>(this IResourceBuilder<T> builder, string name = "http") where T : Resource
    {
        builder.Resource.Endpoints.Add(new EndpointAnnotation(name, EndpointProtocol.Http1));
        return builder;
    }

    public static IResourceBuilder<T> WithHttpHealthCheck<T>(this IResourceBuilder<T> builder, string path = "/health") where T : Resource
    {
        builder.Resource.HealthPath = path;
        return builder;
    }

    public static IResourceBuilder<T> WithHealthCheck<T>(this IResourceBuilder<T> builder, Func<CancellationToken, Task<bool>> check) where T : Resource
    {
        builder.Resource.HealthCheck = check;
        return builder;
    }

    public static IResourceBuilder<T> WithStopGrace<T>(this IResourceBuilder<T> builder, TimeSpan grace) where T : Resource
    {
        builder.Resource.StopGrace = grace;
        return builder;
    }
}
