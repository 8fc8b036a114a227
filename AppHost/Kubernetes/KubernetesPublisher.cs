using System.Text;
using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using k8s;
using k8s.Models;

namespace Platform.AppHost.Kubernetes;

/// <summary>
/// Writes Kubernetes manifests from the app model (<c>dotnet run --project AppHost -- --publisher kubernetes
/// --output-path deploy/kubernetes</c>): per project resource with a <see cref="KubernetesAnnotation"/>, its workload
/// (StatefulSet, DaemonSet, Deployment) and Service, from the same resources, endpoints and references as the local
/// run. Service discovery variables (<c>services__registry__grpc__0</c>) become Service DNS names; the local-only
/// settings (ports chosen by DCP, data directories under the AppHost's state, the dev profile) are not carried over.
/// Aspire's own Kubernetes publisher (Aspire.Hosting.Kubernetes) is not served by our package feed, so this is ours:
/// the KubernetesClient model types, serialised by its YAML serialiser, so every field is a real one.
///
/// Layout: <c>base/</c> (the SQLite registry, one replica, on a volume) and <c>overlays/sqlite</c> and
/// <c>overlays/postgres</c> (two registry replicas on PostgreSQL), each with a kustomization.yaml.
/// </summary>
public static class KubernetesPublisher
{
    public const string PartOf = "platform";
    private const long User = 10001;

    /// <summary>--publisher kubernetes --output-path DIR: the output directory, and the arguments without them.</summary>
    public static (string? Output, string[] Others) Option(string[] args)
    {
        var rest = new List<string>();
        string? publisher = null, output = null;
        for (var i = 0; i < args.Length; i++)
        {
            if (args[i] == "--publisher" && i + 1 < args.Length) publisher = args[++i];
            else if (args[i] == "--output-path" && i + 1 < args.Length) output = args[++i];
            else rest.Add(args[i]);
        }
        if (publisher != "kubernetes") return (null, args); // Aspire's own publishers (manifest) keep their arguments
        // Relative to where the command was run ($PWD: dotnet run starts the AppHost in its project directory).
        var from = Environment.GetEnvironmentVariable("PWD") is { Length: > 0 } pwd && Directory.Exists(pwd) ? pwd : Directory.GetCurrentDirectory();
        return (Path.GetFullPath(output ?? Path.Combine("deploy", "kubernetes"), from), [.. rest]);
    }

    /// <summary>Every file the model gives: relative path -> YAML text.</summary>
    public static SortedDictionary<string, string> Generate(IEnumerable<IResource> resources)
    {
        var files = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var published = resources.Where(r => r.Annotations.OfType<KubernetesAnnotation>().Any()).ToList();
        var baseResources = new List<string>();
        foreach (var resource in published)
        {
            var objects = Objects(resource, published);
            var file = $"{resource.Name}.yaml";
            files[$"base/{file}"] = Documents(objects);
            baseResources.Add(file);
        }
        files["base/platform-config.yaml"] = Documents([OtelConfig()]);
        files["base/platform-token.secret-template.yaml"] = Documents([TokenSecret()]);
        baseResources.Add("platform-config.yaml");
        files["base/kustomization.yaml"] = Kustomization(
            $"The platform's services, the registry on SQLite (one replica, on a volume). platform-token is a template: put a token of your own in it first ({TokenSecretName}.secret-template.yaml), or give the Secret another way.",
            [.. baseResources, "platform-token.secret-template.yaml"], [], published.Select(r => ImageName(r.Name)));
        files["overlays/sqlite/kustomization.yaml"] = Kustomization("The base as it is: the registry on SQLite, one replica.", ["../../base"], [], []);
        files["overlays/postgres/kustomization.yaml"] = Kustomization(
            "The registry on PostgreSQL: two replicas on one database (its connection string in the Secret registry-store, a template).",
            ["../../base", "registry-store.secret-template.yaml"], ["registry-postgres.patch.yaml"], []);
        files["overlays/postgres/registry-store.secret-template.yaml"] = Documents([StoreSecret()]);
        files["overlays/postgres/registry-postgres.patch.yaml"] = Documents([PostgresPatch()]);
        return files;
    }

    /// <summary>Writes the files under <paramref name="output"/> (replacing what it held).</summary>
    public static void Write(IEnumerable<IResource> resources, string output)
    {
        var files = Generate(resources);
        foreach (var stale in new[] { "base", "overlays" }.Select(d => Path.Combine(output, d)).Where(Directory.Exists)) Directory.Delete(stale, recursive: true);
        foreach (var (path, text) in files)
        {
            var full = Path.Combine(output, path);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            File.WriteAllText(full, text);
        }
        Console.WriteLine($"Wrote {files.Count} files to {output}: kubectl apply -k {Path.Combine(output, "overlays", "sqlite")} (or overlays/postgres)");
    }

    private const string TokenSecretName = "platform-token";
    private const string ConfigName = "platform-config";

    private static string ImageName(string resource) => $"platform/{resource}";

    private static Dictionary<string, string> Labels(string name) => new()
    {
        ["app.kubernetes.io/name"] = name,
        ["app.kubernetes.io/part-of"] = PartOf,
    };

    private static List<object> Objects(IResource resource, IReadOnlyList<IResource> published)
    {
        var shape = resource.Annotations.OfType<KubernetesAnnotation>().Single();
        var name = resource.Name;
        var endpoints = resource.Annotations.OfType<EndpointAnnotation>().OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
        int Port(string endpoint) => endpoints.Single(e => e.Name == endpoint) is var e && (e.TargetPort ?? e.Port) is { } port
            ? port : throw new InvalidOperationException($"{name}: endpoint {endpoint} has no port");
        var grpc = Port("grpc");
        var http = Port("http");

        var env = new List<V1EnvVar>
        {
            Env("Kestrel__Endpoints__grpc__Url", $"http://0.0.0.0:{grpc}"),
            Env("Kestrel__Endpoints__grpc__Protocols", "Http2"),
            Env("Kestrel__Endpoints__http__Url", $"http://0.0.0.0:{http}"),
            Env("Kestrel__Endpoints__http__Protocols", "Http1"),
            Env("PLATFORM_DATA_DIR", "/data"),
            Env("OTEL_SERVICE_NAME", name),
            Env("Platform__Token", from: new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Key = "token", Name = TokenSecretName } }),
            Env("Platform__AgentToken", from: new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Key = "agent-token", Name = TokenSecretName } }),
        };
        // References become Service DNS names; a DaemonSet's headless Service is many addresses, not one: the pods that
        // need each node find it through the registry (Supervisor:Nodes=registry).
        foreach (var reference in resource.Annotations.OfType<ResourceRelationshipAnnotation>().Where(a => a.Type == "Reference").Select(a => a.Resource).Distinct())
        {
            if (!published.Contains(reference) || reference.Annotations.OfType<KubernetesAnnotation>().Single().Shape == KubernetesShape.DaemonSet) continue;
            foreach (var endpoint in reference.Annotations.OfType<EndpointAnnotation>().OrderBy(e => e.Name, StringComparer.Ordinal))
                env.Add(Env($"services__{reference.Name}__{endpoint.Name}__0", $"http://{reference.Name}:{endpoint.TargetPort ?? endpoint.Port}"));
        }
        if (shape.Shape == KubernetesShape.DaemonSet)
        {
            // Each node by itself: its name, and its pod's own address for the Supervisor.
            env.Add(Env("NODE_NAME", from: new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "spec.nodeName" } }));
            env.Add(Env("POD_IP", from: new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "status.podIP" } }));
            env.Add(Env("Launcher__RegisterNode", "true"));
            env.Add(Env("Launcher__Node", "$(NODE_NAME)"));
            env.Add(Env("Launcher__Address", $"http://$(POD_IP):{grpc}"));
        }
        foreach (var (key, value) in shape.Environment.OrderBy(e => e.Key, StringComparer.Ordinal)) env.Add(Env(key, value));

        var container = new V1Container
        {
            Name = name,
            Image = $"{ImageName(name)}:latest",
            ImagePullPolicy = "IfNotPresent",
            Ports = [new V1ContainerPort { ContainerPort = grpc, Name = "grpc", Protocol = "TCP" }, new V1ContainerPort { ContainerPort = http, Name = "http", Protocol = "TCP" }],
            Env = env,
            EnvFrom = [new V1EnvFromSource { ConfigMapRef = new V1ConfigMapEnvSource { Name = ConfigName } }],
            // Ready: grpc.health.v1 over the gRPC port (every check, dependencies included). Alive: /alive.
            ReadinessProbe = new V1Probe { Grpc = new V1GRPCAction { Port = grpc }, PeriodSeconds = 5, TimeoutSeconds = 2, FailureThreshold = 3 },
            LivenessProbe = new V1Probe { HttpGet = new V1HTTPGetAction { Port = "http", Path = "/alive" }, PeriodSeconds = 10, TimeoutSeconds = 2, FailureThreshold = 3 },
            StartupProbe = new V1Probe { HttpGet = new V1HTTPGetAction { Port = "http", Path = "/alive" }, PeriodSeconds = 1, FailureThreshold = 60 },
            Resources = new V1ResourceRequirements
            {
                Requests = new Dictionary<string, ResourceQuantity> { ["cpu"] = new ResourceQuantity(shape.CpuRequest), ["memory"] = new ResourceQuantity(shape.MemoryRequest) },
                Limits = new Dictionary<string, ResourceQuantity> { ["memory"] = new ResourceQuantity(shape.MemoryLimit) },
            },
            SecurityContext = new V1SecurityContext
            {
                AllowPrivilegeEscalation = false,
                ReadOnlyRootFilesystem = true,
                RunAsNonRoot = true,
                RunAsUser = User,
                RunAsGroup = User,
                Capabilities = new V1Capabilities { Drop = ["ALL"] },
            },
            VolumeMounts = [new V1VolumeMount { MountPath = "/data", Name = "data" }, new V1VolumeMount { MountPath = "/tmp", Name = "tmp" }],
        };
        var volumes = new List<V1Volume> { new V1Volume { Name = "tmp", EmptyDir = new V1EmptyDirVolumeSource() } };
        if (shape.Shape is KubernetesShape.Deployment or KubernetesShape.DaemonSet) volumes.Insert(0, new V1Volume { Name = "data", EmptyDir = new V1EmptyDirVolumeSource() });
        if (shape.Shape == KubernetesShape.Singleton) volumes.Insert(0, new V1Volume { Name = "data", PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = $"{name}-data" } });
        var pod = new V1PodTemplateSpec
        {
            Metadata = new V1ObjectMeta { Labels = Labels(name) },
            Spec = new V1PodSpec
            {
                Containers = [container],
                Volumes = volumes,
                EnableServiceLinks = false,
                TerminationGracePeriodSeconds = shape.Shape == KubernetesShape.DaemonSet ? 30 : 10,
                SecurityContext = new V1PodSecurityContext { RunAsNonRoot = true, FsGroup = User, SeccompProfile = new V1SeccompProfile { Type = "RuntimeDefault" } },
            },
        };
        var selector = new V1LabelSelector { MatchLabels = Labels(name) };
        var meta = new V1ObjectMeta { Name = name, Labels = Labels(name) };
        var objects = new List<object>();
        switch (shape.Shape)
        {
            case KubernetesShape.StatefulSet:
                objects.Add(new V1StatefulSet
                {
                    ApiVersion = "apps/v1", Kind = "StatefulSet", Metadata = meta,
                    Spec = new V1StatefulSetSpec
                    {
                        Replicas = 1,
                        ServiceName = name,
                        Selector = selector,
                        Template = pod,
                        VolumeClaimTemplates = [Claim("data", shape.VolumeSize)],
                    },
                });
                break;
            case KubernetesShape.DaemonSet:
                objects.Add(new V1DaemonSet
                {
                    ApiVersion = "apps/v1", Kind = "DaemonSet", Metadata = meta,
                    Spec = new V1DaemonSetSpec { Selector = selector, Template = pod, UpdateStrategy = new V1DaemonSetUpdateStrategy { Type = "RollingUpdate" } },
                });
                break;
            case KubernetesShape.Singleton:
                objects.Add(Claim($"{name}-data", shape.VolumeSize, Labels(name)));
                objects.Add(new V1Deployment
                {
                    ApiVersion = "apps/v1", Kind = "Deployment", Metadata = meta,
                    // Never two at once: the old pod goes before the new one starts (its lock would make a second one stand by anyway).
                    Spec = new V1DeploymentSpec { Replicas = 1, Selector = selector, Template = pod, Strategy = new V1DeploymentStrategy { Type = "Recreate" } },
                });
                break;
            default:
                objects.Add(new V1Deployment
                {
                    ApiVersion = "apps/v1", Kind = "Deployment", Metadata = meta,
                    Spec = new V1DeploymentSpec { Replicas = 1, Selector = selector, Template = pod },
                });
                break;
        }
        objects.Add(new V1Service
        {
            ApiVersion = "v1", Kind = "Service", Metadata = new V1ObjectMeta { Name = name, Labels = Labels(name) },
            Spec = new V1ServiceSpec
            {
                // A DaemonSet's Service is headless: its DNS name lists every node's pod, each addressed by itself.
                ClusterIP = shape.Shape == KubernetesShape.DaemonSet ? "None" : null,
                Selector = Labels(name),
                Ports =
                [
                    new V1ServicePort { Port = grpc, Name = "grpc", Protocol = "TCP", TargetPort = "grpc", AppProtocol = "kubernetes.io/h2c" },
                    new V1ServicePort { Port = http, Name = "http", Protocol = "TCP", TargetPort = "http" },
                ],
            },
        });
        return objects;
    }

    private static V1EnvVar Env(string name, string value) => new() { Name = name, Value = value };

    private static V1EnvVar Env(string name, V1EnvVarSource from) => new() { Name = name, ValueFrom = from };

    private static V1PersistentVolumeClaim Claim(string name, string size, Dictionary<string, string>? labels = null) => new()
    {
        ApiVersion = "v1", Kind = "PersistentVolumeClaim",
        Metadata = new V1ObjectMeta { Name = name, Labels = labels },
        Spec = new V1PersistentVolumeClaimSpec
        {
            AccessModes = ["ReadWriteOnce"],
            Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new ResourceQuantity(size) } },
        },
    };

    private static V1ConfigMap OtelConfig() => new()
    {
        ApiVersion = "v1", Kind = "ConfigMap",
        Metadata = new V1ObjectMeta { Name = ConfigName, Labels = new Dictionary<string, string> { ["app.kubernetes.io/part-of"] = PartOf } },
        // Where traces, logs and metrics go (an OpenTelemetry collector of yours), and how the services log.
        Data = new Dictionary<string, string>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://otel-collector:4317",
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc",
            ["OTEL_TRACES_SAMPLER"] = "parentbased_always_on",
            ["Logging__Console__FormatterName"] = "json",
        },
    };

    private static V1Secret TokenSecret() => new()
    {
        ApiVersion = "v1", Kind = "Secret", Type = "Opaque",
        Metadata = new V1ObjectMeta { Name = TokenSecretName, Labels = new Dictionary<string, string> { ["app.kubernetes.io/part-of"] = PartOf } },
        // A template: replace both values (for example: openssl rand -hex 32) before applying.
        StringData = new Dictionary<string, string> { ["token"] = "REPLACE-ME-with-a-random-token", ["agent-token"] = "REPLACE-ME-with-another-random-token" },
    };

    private static V1Secret StoreSecret() => new()
    {
        ApiVersion = "v1", Kind = "Secret", Type = "Opaque",
        Metadata = new V1ObjectMeta { Name = "registry-store", Labels = new Dictionary<string, string> { ["app.kubernetes.io/part-of"] = PartOf } },
        StringData = new Dictionary<string, string> { ["connection-string"] = "Host=postgres;Database=platform;Username=platform;Password=REPLACE-ME" },
    };

    /// <summary>The registry on PostgreSQL: two replicas, the store's connection string from the registry-store Secret.</summary>
    private static V1StatefulSet PostgresPatch() => new()
    {
        ApiVersion = "apps/v1", Kind = "StatefulSet",
        Metadata = new V1ObjectMeta { Name = "registry" },
        Spec = new V1StatefulSetSpec
        {
            Replicas = 2,
            Template = new V1PodTemplateSpec
            {
                Spec = new V1PodSpec
                {
                    Containers =
                    [
                        new V1Container
                        {
                            Name = "registry",
                            Env = [Env("ConnectionStrings__registry-store", from: new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Key = "connection-string", Name = "registry-store" } })],
                        },
                    ],
                },
            },
        },
    };

    private static string Kustomization(string comment, IEnumerable<string> resources, IEnumerable<string> patches, IEnumerable<string> images)
    {
        var text = new StringBuilder();
        text.AppendLine("# Generated from the AppHost's app model: dotnet run --project AppHost -- --publisher kubernetes --output-path deploy/kubernetes");
        text.AppendLine($"# {comment}");
        text.AppendLine("apiVersion: kustomize.config.k8s.io/v1beta1");
        text.AppendLine("kind: Kustomization");
        // A directory goes under "bases": the older field, which every kubectl's kustomize reads (kubectl before 1.21
        // reads no directory under "resources"; newer ones warn that "resources" replaces it).
        var list = resources.ToList();
        if (list.Any(r => r.StartsWith("../", StringComparison.Ordinal)))
        {
            text.AppendLine("bases:");
            foreach (var r in list.Where(r => r.StartsWith("../", StringComparison.Ordinal))) text.AppendLine($"  - {r}");
        }
        if (list.Any(r => !r.StartsWith("../", StringComparison.Ordinal)))
        {
            text.AppendLine("resources:");
            foreach (var r in list.Where(r => !r.StartsWith("../", StringComparison.Ordinal))) text.AppendLine($"  - {r}");
        }
        var patchList = patches.ToList();
        if (patchList.Count > 0)
        {
            // The older field, which every kubectl's kustomize reads (newer ones warn that "patches" replaces it).
            text.AppendLine("patchesStrategicMerge:");
            foreach (var p in patchList) text.AppendLine($"  - {p}");
        }
        var imageList = images.ToList();
        if (imageList.Count > 0)
        {
            text.AppendLine("# The images (eng/build-images.sh builds them); point newName/newTag at your registry.");
            text.AppendLine("images:");
            foreach (var i in imageList) text.AppendLine($"  - name: {i}\n    newTag: latest");
        }
        return text.ToString();
    }

    private static string Documents(IEnumerable<object> objects) =>
        "# Generated from the AppHost's app model: dotnet run --project AppHost -- --publisher kubernetes --output-path deploy/kubernetes\n" +
        string.Join("---\n", objects.Select(o => KubernetesYaml.Serialize(o).TrimEnd() + "\n"));
}
