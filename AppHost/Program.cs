using Platform.AppHost.Kubernetes;
// The platform's app model: four services, who finds whom, and who waits for whom. DCP runs it and the Aspire
// dashboard shows it; AsPlatformService (PlatformServiceExtensions.cs) adds what Aspire does not do for us, and
// PublishAsKubernetes how each runs in Kubernetes (Kubernetes/KubernetesPublisher.cs writes the manifests).
var samples = args.Contains("--samples");
var native = args.Contains("--native"); // the services' Native AOT builds (eng/publish-native.sh), not their JIT builds
var (nodes, rest) = NodeExtensions.NodesOption([.. args.Where(a => a is not ("--samples" or "--native"))]); // --nodes N: N launchers as nodes
var (kubernetes, others) = KubernetesPublisher.Option(rest); // --publisher kubernetes --output-path DIR: manifests
var builder = DistributedApplication.CreateBuilder(others).WithPlatformState();
if (native) builder.Configuration[PlatformServiceExtensions.NativeSetting] = "true"; // or Platform__Native=true

var registry = builder.AddProject<Projects.Platform_SessionRegistry>("registry").AsPlatformService()
    .PublishAsKubernetes(KubernetesShape.StatefulSet);

var launchers = builder.AddLaunchers(nodes, launcher => launcher.AsPlatformService()
    .WithReference(registry).WaitFor(registry)
    .WithEnvironment("Launcher__AllowArbitraryCommands", "true") // the local dev profile
    .KeepsItsInstancesAcrossItsRestarts()
    .PublishAsKubernetes(KubernetesShape.DaemonSet, memoryLimit: "2Gi")); // its agents run in its pod

var monitor = builder.AddProject<Projects.Platform_AgentMonitor>("monitor").AsPlatformService()
    .WithReference(registry).WaitFor(registry)
    .PublishAsKubernetes(KubernetesShape.Deployment);

var supervisor = builder.AddProject<Projects.Platform_Supervisor>("supervisor").AsPlatformService()
    .WithReference(registry).WaitFor(registry)
    .WithLaunchers(launchers, nodes)
    .WithReference(monitor).WaitFor(monitor)
    .PublishAsKubernetes(KubernetesShape.Singleton, new Dictionary<string, string> { ["Supervisor__Nodes"] = "registry" });

// Supervised workloads in the app model (WorkloadResources.cs): with --samples (or Platform__Samples=true), the
// samples of samples/workloads.yaml, applied once the supervisor is healthy and shown beside the services.
if (samples || builder.Configuration["Platform:Samples"] == "true") builder.AddWorkloads("samples/workloads.yaml", supervisor);

if (kubernetes is not null) KubernetesPublisher.Write(builder.Resources, kubernetes);
else builder.Build().Run();
