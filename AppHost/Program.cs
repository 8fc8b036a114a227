using Platform.AppHost.Hosting;

// The platform's app model: four services, who finds whom, and who waits for whom.
var builder = DistributedApplication.CreateBuilder(args);

var registry = builder.AddProject("registry", "Platform.SessionRegistry");

var launcher = builder.AddProject("launcher", "Platform.Launcher")
    .WithReference(registry)
    .WaitFor(registry)
    .WithEnvironment("Launcher__AllowArbitraryCommands", "true"); // the local dev profile

var monitor = builder.AddProject("monitor", "Platform.AgentMonitor")
    .WithReference(registry)
    .WaitFor(registry);

builder.AddProject("supervisor", "Platform.Supervisor")
    .WithReference(registry).WaitFor(registry)
    .WithReference(launcher).WaitFor(launcher)
    .WithReference(monitor).WaitFor(monitor);

builder.Build().Run();
