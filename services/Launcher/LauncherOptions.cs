namespace Platform.Launcher;

/// <summary>Settings of the launcher (configuration section "Launcher").</summary>
public sealed class LauncherOptions
{
    public const string Section = "Launcher";

    /// <summary>Named templates the launcher runs (Launcher:Templates:&lt;name&gt;).</summary>
    public Dictionary<string, TemplateOptions> Templates { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Whether explicit process specs may be launched (the AppHost's local profile; default false).</summary>
    public bool AllowArbitraryCommands { get; set; }

    /// <summary>Where instance records and output live; default PLATFORM_DATA_DIR, else ./data.</summary>
    public string? DataDirectory { get; set; }

    /// <summary>This node's name in instances and sessions; default the host name.</summary>
    public string? Node { get; set; }

    /// <summary>Announce this launcher as a node in the registry, for a Supervisor that places workloads on nodes
    /// (Supervisor:Nodes=registry). Default false: a Supervisor that knows one launcher by its service name.</summary>
    public bool RegisterNode { get; set; }

    /// <summary>The node's gRPC address as the Supervisor reaches it (default: the grpc endpoint's URL).</summary>
    public string? Address { get; set; }

    /// <summary>The node's labels, matched by workloads' node selectors (Launcher:Labels:&lt;key&gt;).</summary>
    public Dictionary<string, string> Labels { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Running instances this node takes (0: no limit); a node at capacity is not chosen for new placements.</summary>
    public int Capacity { get; set; }

    /// <summary>The lease of the node's registration: a node not renewed for this long is lost, and its workloads
    /// start elsewhere.</summary>
    public TimeSpan NodeLease { get; set; } = TimeSpan.FromSeconds(10);

    public TimeSpan DefaultStopGrace { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>An output file larger than this is rotated (copied to .1, then truncated).</summary>
    public long MaxLogBytes { get; set; } = 10 * 1024 * 1024;

    /// <summary>
    /// Register an instance's registry session before its start, so the child gets PLATFORM_SESSION_ID (a durable
    /// registry write on the start path, a few ms). False: the session is registered right after the start.
    /// </summary>
    public bool RegisterSessionBeforeStart { get; set; } = true;

    /// <summary>
    /// Exited instances kept per workload (a launch names one, or gets its template's or program's name): the newest
    /// this many, with their output, for GetInstance, ListInstances and logs of earlier runs; older ones are forgotten,
    /// records and output directories both. Instances whose descendants were kept (keep_descendants) stay until stopped.
    /// </summary>
    public int KeepExited { get; set; } = 100;

    /// <summary>An exited instance is forgotten this long after its exit, however few its workload has.</summary>
    public TimeSpan ExitedRetention { get; set; } = TimeSpan.FromHours(24);

    /// <summary>Events a WatchInstanceEvents caller may fall behind before it is cut with RESOURCE_EXHAUSTED.</summary>
    public int WatchBuffer { get; set; } = 4096;

    /// <summary>WatchInstanceEvents streams open at once; one more is RESOURCE_EXHAUSTED.</summary>
    public int MaxWatchers { get; set; } = 1000;

    /// <summary>Launches being started at once (a launch waits for the registry, then spawns); one more is
    /// RESOURCE_EXHAUSTED, to be retried.</summary>
    public int MaxLaunchesInFlight { get; set; } = 256;

    /// <summary>How instances are contained: <c>auto</c> (a cgroup v2 group each where the hierarchy is writable, else
    /// the subreaper fallback), <c>cgroup</c> (required: the launcher does not start without it) or <c>subreaper</c>.</summary>
    public string Containment { get; set; } = "auto";

    /// <summary>The cgroup directory under which the launcher makes its subtree (default: its own cgroup).</summary>
    public string? CgroupParent { get; set; }
}

/// <summary>A named command line.</summary>
public sealed class TemplateOptions
{
    public string Executable { get; set; } = "";
    public List<string> Args { get; set; } = [];
    public Dictionary<string, string> Env { get; set; } = new(StringComparer.Ordinal);
    public string? WorkingDirectory { get; set; }

    /// <summary>See LaunchRequest.keep_descendants.</summary>
    public bool KeepDescendants { get; set; }
}

public static class LaunchLimits
{
    public const int Args = 1024;
    public const int ArgLength = 32 * 1024;
    public const int ArgsTotal = 256 * 1024;
    public const int EnvVars = 256;
    public const int EnvValueLength = 32 * 1024;
    public const int Labels = 64;
    public const int NameLength = 253;
    public const int RequestIdLength = 128;
    public static readonly TimeSpan MaxStopGrace = TimeSpan.FromHours(1);
}
