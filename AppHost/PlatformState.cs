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

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<IDistributedApplicationBuilder, PlatformState> Instances = [];

    public string Directory { get; } = directory;

    /// <summary>This run's bearer token (every call to a platform service needs it; written to apphost.json, 0600).</summary>
    public string Token { get; } = NewToken();

    /// <summary>This run's agent token: what the launcher gives its instances as PLATFORM_TOKEN (their registry session only).</summary>
    public string AgentToken { get; } = NewToken();

    /// <summary>The tokens as Aspire secret parameters (set by WithPlatformState): the dashboard shows them masked.</summary>
    public IResourceBuilder<ParameterResource>? TokenParameter { get; set; }

    public IResourceBuilder<ParameterResource>? AgentTokenParameter { get; set; }

    private static string NewToken() => Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));

    public string StateFile => Path.Combine(Directory, "apphost.json");

    public string DataDirectory(string resource) => Path.Combine(Directory, resource);

    /// <summary>The builder's one state (the same tokens for every service of the run).</summary>
    public static PlatformState For(IDistributedApplicationBuilder builder) => Instances.GetValue(builder, Create);

    private static PlatformState Create(IDistributedApplicationBuilder builder)
    {
        var configured = builder.Configuration[StateDirectoryVariable];
        var directory = string.IsNullOrWhiteSpace(configured)
            ? Path.Combine(BuildOutput.RepositoryRoot ?? System.IO.Directory.GetCurrentDirectory(), ".platform")
            : configured;
        return new PlatformState(Path.GetFullPath(directory));
    }
}
