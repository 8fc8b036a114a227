// The platform's app model: four services, who finds whom, and who waits for whom. DCP runs it and the Aspire
// dashboard shows it; AsPlatformService (PlatformServiceExtensions.cs) adds what Aspire does not do for us.
var builder = DistributedApplication.CreateBuilder(args).WithPlatformState();

var registry = builder.AddProject<Projects.Platform_SessionRegistry>("registry").AsPlatformService();

var launcher = builder.AddProject<Projects.Platform_Launcher>("launcher").AsPlatformService()
    .WithReference(registry).WaitFor(registry)
    .WithEnvironment("Launcher__AllowArbitraryCommands", "true") // the local dev profile
    .KeepsItsInstancesAcrossItsRestarts();

var monitor = builder.AddProject<Projects.Platform_AgentMonitor>("monitor").AsPlatformService()
    .WithReference(registry).WaitFor(registry);

builder.AddProject<Projects.Platform_Supervisor>("supervisor").AsPlatformService()
    .WithReference(registry).WaitFor(registry)
    .WithReference(launcher).WaitFor(launcher)
    .WithReference(monitor).WaitFor(monitor);

builder.Build().Run();
