namespace Platform.AgentMonitor;

public static class Extensions
{
    /// <summary>Registers the AgentMonitor's own services.</summary>
    public static IHostApplicationBuilder AddAgentMonitor(this IHostApplicationBuilder builder)
    {
        builder.Services.AddHealthChecks()
            .AddPlatformDependency("registry");
        return builder;
    }
}
