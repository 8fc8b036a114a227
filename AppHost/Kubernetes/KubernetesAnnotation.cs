using Aspire.Hosting.ApplicationModel;

namespace Aspire.Hosting;

/// <summary>How a resource runs in Kubernetes (read by the manifest publisher, <see cref="Platform.AppHost.Kubernetes.KubernetesPublisher"/>).</summary>
public enum KubernetesShape
{
    /// <summary>A Deployment of one replica and a Service.</summary>
    Deployment,
    /// <summary>A StatefulSet of one replica with a volume claim (its data directory), and a Service.</summary>
    StatefulSet,
    /// <summary>One pod per node (a DaemonSet) and a headless Service: each pod is addressed by itself.</summary>
    DaemonSet,
    /// <summary>Exactly one replica, never two at once (strategy Recreate), with a volume claim: a Deployment.</summary>
    Singleton,
}

public sealed class KubernetesAnnotation(KubernetesShape shape) : IResourceAnnotation
{
    public KubernetesShape Shape { get; } = shape;

    /// <summary>Settings the resource gets in Kubernetes only (the local run has its own).</summary>
    public Dictionary<string, string> Environment { get; } = new(StringComparer.Ordinal);

    public string CpuRequest { get; set; } = "50m";
    public string MemoryRequest { get; set; } = "96Mi";
    public string MemoryLimit { get; set; } = "512Mi";
    public string VolumeSize { get; set; } = "1Gi";
}

public static class KubernetesAnnotationExtensions
{
    /// <summary>Says how the resource runs in Kubernetes; <paramref name="environment"/> are settings for there only.</summary>
    public static IResourceBuilder<T> PublishAsKubernetes<T>(this IResourceBuilder<T> builder, KubernetesShape shape,
        IReadOnlyDictionary<string, string>? environment = null, string? memoryLimit = null) where T : IResource
    {
        var annotation = new KubernetesAnnotation(shape);
        foreach (var (key, value) in environment ?? new Dictionary<string, string>()) annotation.Environment[key] = value;
        if (memoryLimit is not null) annotation.MemoryLimit = memoryLimit;
        return builder.WithAnnotation(annotation, ResourceAnnotationMutationBehavior.Replace);
    }
}
