// The platform's app model: four services, who finds whom, and who waits for whom. DCP runs it and the Aspire
// dashboard shows it; AsPlatformService (PlatformServiceExtensions.cs) adds what Aspire does not do for us.
var samples = args.Contains("--samples");
var (nodes, rest) = NodeExtensions.NodesOption([.. args.Where(a => a != "--samples")]); // --nodes N: N launchers as nodes
var builder = DistributedApplication.CreateBuilder(rest).WithPlatformState();

var registry = builder.AddProject<Projects.Platform_SessionRegistry>("registry").AsPlatformService();

var launchers = builder.AddLaunchers(nodes, launcher => launcher.AsPlatformService()
    .WithReference(registry).WaitFor(registry)
    .WithEnvironment("Launcher__AllowArbitraryCommands", "true") // the local dev profile
    .KeepsItsInstancesAcrossItsRestarts());

var monitor = builder.AddProject<Projects.Platform_AgentMonitor>("monitor").AsPlatformService()
    .WithReference(registry).WaitFor(registry);

var supervisor = builder.AddProject<Projects.Platform_Supervisor>("supervisor").AsPlatformService()
    .WithReference(registry).WaitFor(registry)
    .WithLaunchers(launchers, nodes)
    .WithReference(monitor).WaitFor(monitor);

// Supervised workloads in the app model (WorkloadResources.cs): with --samples (or Platform__Samples=true), the
// samples of samples/workloads.yaml, applied once the supervisor is healthy and shown beside the services.
if (samples || builder.Configuration["Platform:Samples"] == "true") builder.AddWorkloads("samples/workloads.yaml", supervisor);

builder.Build().Run();
