using System.Reflection;
using k8s;
using k8s.Models;
using Platform.Testing;

namespace Platform.Deploy.Tests;

/// <summary>
/// deploy/kubernetes against the app model and against Kubernetes: the committed files are what the AppHost's
/// publisher writes now; every object deserialises strictly into KubernetesClient's types (an unknown field fails);
/// each overlay renders with kubectl kustomize; and in what it renders, selectors match labels, Services reach named
/// container ports, probes hit ports the container has, and every ConfigMap, Secret and claim a pod uses exists.
/// </summary>
public sealed class ManifestTests
{
    private static readonly string Root = AppHostProcess.RepositoryRoot(typeof(ManifestTests).Assembly);
    private static readonly string Committed = Path.Combine(Root, "deploy", "kubernetes");
    public static readonly TheoryData<string> Overlays = new() { "sqlite", "postgres" };

    [Fact]
    public async Task The_committed_manifests_are_what_the_app_model_generates_now()
    {
        var output = Directory.CreateTempSubdirectory("platform-manifests-").FullName;
        try
        {
            var appHost = Testing.AppHostProcess.ProjectOutput(typeof(ManifestTests).Assembly, "Platform.AppHost");
            var (code, text) = await RunAsync("dotnet", [appHost, "--publisher", "kubernetes", "--output-path", output], Path.GetDirectoryName(appHost)!);
            Assert.True(code == 0, text);
            var generated = Files(output);
            var committed = Files(Committed);
            Assert.Equal(generated.Keys, committed.Keys);
            foreach (var (path, content) in generated)
                Assert.True(content == committed[path],
                    $"deploy/kubernetes/{path} differs from what the app model gives now: run `dotnet run --project AppHost -- --publisher kubernetes --output-path deploy/kubernetes` and commit the result");
        }
        finally
        {
            Directory.Delete(output, recursive: true);
        }
    }

    [Fact]
    public void Every_object_deserialises_strictly_into_the_Kubernetes_model_and_an_unknown_field_would_fail()
    {
        var count = 0;
        foreach (var (path, text) in Files(Committed).Where(f => !f.Key.EndsWith("kustomization.yaml", StringComparison.Ordinal)))
        {
            var objects = KubernetesYaml.LoadAllFromString(text, null, strict: true);
            Assert.True(objects.Count > 0, path);
            Assert.All(objects, o => Assert.IsAssignableFrom<IKubernetesObject>(o));
            count += objects.Count;
        }
        Assert.Equal(13, count); // 4 workloads, 4 Services, a claim, a ConfigMap, 2 Secret templates, the PostgreSQL patch
        // The check has teeth: a misspelt field is refused.
        var wrong = File.ReadAllText(Path.Combine(Committed, "base", "monitor.yaml")).Replace("readinessProbe:", "readynessProbe:", StringComparison.Ordinal);
        Assert.ThrowsAny<Exception>(() => KubernetesYaml.LoadAllFromString(wrong, null, strict: true));
    }

    [Theory]
    [MemberData(nameof(Overlays))]
    public async Task Each_overlay_renders_and_its_objects_refer_to_one_another_correctly(string overlay)
    {
        var (code, rendered) = await RunAsync("kubectl", ["kustomize", Path.Combine(Committed, "overlays", overlay)], Root);
        Assert.True(code == 0, rendered);
        var objects = KubernetesYaml.LoadAllFromString(rendered, null, strict: true);
        var workloads = new List<(string Kind, string Name, V1LabelSelector Selector, V1PodTemplateSpec Template, IList<V1PersistentVolumeClaim>? Claims)>();
        foreach (var o in objects)
        {
            switch (o)
            {
                case V1StatefulSet s: workloads.Add(("StatefulSet", s.Metadata.Name, s.Spec.Selector, s.Spec.Template, s.Spec.VolumeClaimTemplates)); break;
                case V1Deployment d: workloads.Add(("Deployment", d.Metadata.Name, d.Spec.Selector, d.Spec.Template, null)); break;
                case V1DaemonSet d: workloads.Add(("DaemonSet", d.Metadata.Name, d.Spec.Selector, d.Spec.Template, null)); break;
            }
        }
        Assert.Equal(["launcher", "monitor", "registry", "supervisor"], workloads.Select(w => w.Name).Order());
        Assert.Equal("DaemonSet", workloads.Single(w => w.Name == "launcher").Kind);
        var registry = objects.OfType<V1StatefulSet>().Single(s => s.Metadata.Name == "registry");
        Assert.Equal(overlay == "postgres" ? 2 : 1, registry.Spec.Replicas);
        var supervisor = objects.OfType<V1Deployment>().Single(d => d.Metadata.Name == "supervisor");
        Assert.Equal(("Recreate", 1), (supervisor.Spec.Strategy.Type, supervisor.Spec.Replicas));
        var configMaps = objects.OfType<V1ConfigMap>().Select(c => c.Metadata.Name).ToHashSet();
        var secrets = objects.OfType<V1Secret>().ToDictionary(s => s.Metadata.Name);
        var claims = objects.OfType<V1PersistentVolumeClaim>().Select(c => c.Metadata.Name).ToHashSet();

        foreach (var (kind, name, selector, template, claimTemplates) in workloads)
        {
            var where = $"{overlay}: {kind} {name}";
            // The selector selects its own pods.
            Assert.All(selector.MatchLabels, l => Assert.Equal(l.Value, template.Metadata.Labels[l.Key]));
            var container = Assert.Single(template.Spec.Containers);
            var ports = container.Ports.ToDictionary(p => p.Name, p => p.ContainerPort);
            // Probes hit ports the container has; readiness is grpc.health.v1 on the grpc port.
            Assert.Equal(ports["grpc"], container.ReadinessProbe.Grpc.Port);
            Assert.True(ports.ContainsKey((string)container.LivenessProbe.HttpGet.Port), where);
            // The container listens where its ports say.
            var env = container.Env.ToDictionary(e => e.Name);
            Assert.Equal($"http://0.0.0.0:{ports["grpc"]}", env["Kestrel__Endpoints__grpc__Url"].Value);
            Assert.Equal($"http://0.0.0.0:{ports["http"]}", env["Kestrel__Endpoints__http__Url"].Value);
            // Locked down: not root, nothing writable but its volumes.
            Assert.True(container.SecurityContext.RunAsNonRoot == true && container.SecurityContext.ReadOnlyRootFilesystem == true &&
                container.SecurityContext.AllowPrivilegeEscalation == false && container.SecurityContext.Capabilities.Drop.Contains("ALL"), where);
            Assert.NotNull(container.Resources.Requests["memory"]);
            Assert.NotNull(container.Resources.Limits["memory"]);
            // Everything it refers to exists.
            foreach (var from in container.EnvFrom) Assert.Contains(from.ConfigMapRef.Name, configMaps);
            foreach (var e in container.Env.Where(e => e.ValueFrom?.SecretKeyRef is not null))
                Assert.True(secrets.TryGetValue(e.ValueFrom.SecretKeyRef.Name, out var secret) && secret.StringData.ContainsKey(e.ValueFrom.SecretKeyRef.Key), $"{where}: secret {e.ValueFrom.SecretKeyRef.Name}/{e.ValueFrom.SecretKeyRef.Key}");
            var volumes = template.Spec.Volumes?.Select(v => v.Name).Concat(claimTemplates?.Select(c => c.Metadata.Name) ?? []).ToHashSet() ?? [];
            foreach (var mount in container.VolumeMounts) Assert.Contains(mount.Name, volumes);
            foreach (var v in template.Spec.Volumes?.Where(v => v.PersistentVolumeClaim is not null) ?? []) Assert.Contains(v.PersistentVolumeClaim.ClaimName, claims);
            // Service discovery: every service a container is pointed at is a Service with that port.
            foreach (var e in env.Values.Where(e => e.Name.StartsWith("services__", StringComparison.Ordinal)))
            {
                var parts = e.Name.Split("__");
                var target = objects.OfType<V1Service>().SingleOrDefault(s => s.Metadata.Name == parts[1]);
                Assert.True(target is not null, $"{where}: {e.Name} names no Service");
                Assert.Equal($"http://{parts[1]}:{target!.Spec.Ports.Single(p => p.Name == parts[2]).Port}", e.Value);
            }
        }

        foreach (var service in objects.OfType<V1Service>())
        {
            // It selects a workload's pods, and each port targets a named port of that workload's container.
            var workload = workloads.Single(w => service.Spec.Selector.All(l => w.Template.Metadata.Labels.TryGetValue(l.Key, out var v) && v == l.Value));
            var names = workload.Template.Spec.Containers.SelectMany(c => c.Ports).Select(p => p.Name).ToHashSet();
            Assert.All(service.Spec.Ports, p => Assert.Contains((string)p.TargetPort, names));
            if (workload.Kind == "DaemonSet") Assert.Equal("None", service.Spec.ClusterIP); // each node addressed by itself
            if (workload.Kind == "StatefulSet") Assert.Equal(service.Metadata.Name, objects.OfType<V1StatefulSet>().Single(s => s.Metadata.Name == workload.Name).Spec.ServiceName);
        }
        var launcher = workloads.Single(w => w.Name == "launcher").Template.Spec.Containers[0].Env.ToDictionary(e => e.Name);
        Assert.Equal("true", launcher["Launcher__RegisterNode"].Value);
        Assert.Equal("spec.nodeName", launcher["NODE_NAME"].ValueFrom.FieldRef.FieldPath);
        Assert.Equal("registry", supervisor.Spec.Template.Spec.Containers[0].Env.Single(e => e.Name == "Supervisor__Nodes").Value);
        if (overlay == "postgres")
            Assert.Equal("registry-store", registry.Spec.Template.Spec.Containers[0].Env.Single(e => e.Name == "ConnectionStrings__registry-store").ValueFrom.SecretKeyRef.Name);
    }

    private static SortedDictionary<string, string> Files(string directory) =>
        new(Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(directory, f).Replace('\\', '/'), File.ReadAllText), StringComparer.Ordinal);

    private static async Task<(int Code, string Output)> RunAsync(string executable, string[] args, string directory)
    {
        // No launcher in this test process: System.Diagnostics.Process is safe here (docs/architecture.md §6).
        var start = new System.Diagnostics.ProcessStartInfo(executable, args) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment.Remove("PWD"); // relative paths would resolve against the test's directory, not the AppHost's
        using var process = System.Diagnostics.Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        return (process.ExitCode, process.ExitCode == 0 ? await stdout : await stdout + await stderr);
    }
}
