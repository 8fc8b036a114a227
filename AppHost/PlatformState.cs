using Aspire.Hosting;

namespace Platform.AppHost;

/// <summary>
/// Where the platform keeps its state on a developer's machine: <c>$PLATFORM_STATE_DIR</c> (default <c>.platform/</c>
/// in the repository): one data directory per service and <c>apphost.json</c>, the AppHost's live state.
/// </summary>
public sealed class PlatformState(string directory)
{
    public const string StateDirectoryVariable = "PLATFORM_STATE_DIR";
    public const string DataDirectoryVariable = "PLATFORM_DATA_DIR";

    public string Directory { get; } = directory;

    public string StateFile => Path.Combine(Directory, "apphost.json");

    public string DataDirectory(string resource) => Path.Combine(Directory, resource);

    public static PlatformState For(IDistributedApplicationBuilder builder)
    {
        var configured = builder.Configuration[StateDirectoryVariable];
        var directory = string.IsNullOrWhiteSpace(configured)
            ? Path.Combine(BuildOutput.RepositoryRoot ?? System.IO.Directory.GetCurrentDirectory(), ".platform")
            : configured;
        return new PlatformState(Path.GetFullPath(directory));
    }
}
