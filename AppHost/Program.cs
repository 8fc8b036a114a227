// The platform's app model: four services, who finds whom, and who waits for whom. DCP runs it and the Aspire
// dashboard shows it; AsPlatformService (PlatformServiceExtensions.cs) adds what Aspire does not do for us.
var samples = args.Contains("--samples");
var builder = DistributedApplication.CreateBuilder([.. args.Where(a => a != "--samples")]).WithPlatformState();

var registry = builder.AddProject<Projects.Platform_SessionRegistry>("registry").AsPlatformService();

var launcher = builder.AddProject<Projects.Platform_Launcher>("launcher").AsPlatformService()
    .WithReference(registry).WaitFor(registry)
    .WithEnvironment("Launcher__AllowArbitraryCommands", "true") // the local dev profile
    .KeepsItsInstancesAcrossItsRestarts();

var monitor = builder.AddProject<Projects.Platform_AgentMonitor>("monitor").AsPlatformService()
    .WithReference(registry).WaitFor(registry);

var supervisor = builder.AddProject<Projects.Platform_Supervisor>("supervisor").AsPlatformService()
    .WithReference(registry).WaitFor(registry)
    .WithReference(launcher).WaitFor(launcher)
    .WithReference(monitor).WaitFor(monitor);

// Supervised workloads in the app model (WorkloadResources.cs): with --samples (or Platform__Samples=true), the
// samples of samples/workloads.yaml, applied once the supervisor is healthy and shown beside the services.
if (samples || builder.Configuration["Platform:Samples"] == "true") builder.AddWorkloads("samples/workloads.yaml", supervisor);

builder.Build().Run();
