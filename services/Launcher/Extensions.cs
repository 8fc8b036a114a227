namespace Platform.Launcher;

public static class Extensions
{
    /// <summary>Registers the Launcher's own services.</summary>
    public static IHostApplicationBuilder AddLauncher(this IHostApplicationBuilder builder)
    {
        builder.Services.AddHealthChecks()
            .AddPlatformDependency("registry");
        return builder;
    }
}
