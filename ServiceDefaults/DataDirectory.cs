using Microsoft.Extensions.Configuration;

namespace Platform.ServiceDefaults;

/// <summary>Where a service keeps its files: one rule for every service.</summary>
public static class DataDirectory
{
    /// <summary>The AppHost gives each service its own directory in this variable.</summary>
    public const string Variable = "PLATFORM_DATA_DIR";

    /// <summary>The service's own setting (<paramref name="configured"/>, e.g. Launcher:DataDirectory), else
    /// <c>PLATFORM_DATA_DIR</c>, else <c>data/</c> in the working directory.</summary>
    public static string Resolve(IConfiguration configuration, string? configured) =>
        configured ?? configuration[Variable] ?? Path.Combine(Directory.GetCurrentDirectory(), "data");
}
