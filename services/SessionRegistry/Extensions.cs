namespace Platform.SessionRegistry;

public static class Extensions
{
    /// <summary>Registers the SessionRegistry's own services.</summary>
    public static IHostApplicationBuilder AddSessionRegistry(this IHostApplicationBuilder builder)
    {
        // No dependencies: the registry is the root of the platform.
        return builder;
    }
}
