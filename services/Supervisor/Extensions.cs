namespace Platform.Supervisor;

public static class Extensions
{
    /// <summary>Registers the Supervisor's own services.</summary>
    public static IHostApplicationBuilder AddSupervisor(this IHostApplicationBuilder builder)
    {
        builder.Services.AddHealthChecks()
            .AddPlatformDependency("registry")
            .AddPlatformDependency("launcher")
            .AddPlatformDependency("monitor");
        return builder;
    }
}
