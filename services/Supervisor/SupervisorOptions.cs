namespace Platform.Supervisor;

/// <summary>The Supervisor's settings (section <c>Supervisor</c>).</summary>
public sealed class SupervisorOptions
{
    public const string Section = "Supervisor";

    /// <summary>Watch streams served at once; one more is RESOURCE_EXHAUSTED.</summary>
    public int MaxWatchers { get; set; } = 1000;

    /// <summary>Where supervisor.db lives; default PLATFORM_DATA_DIR, else ./data.</summary>
    public string? DataDirectory { get; set; }

    public TimeSpan DefaultStopGrace { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>How often each workload is checked against the Launcher's view even without events (missed events,
    /// targets the Monitor did not take).</summary>
    public TimeSpan ResyncInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often quiet workloads (reconciled, nothing to retry, their health targets with the Monitor) are
    /// looked at without events, all of them on one schedule; anything due sooner (a backoff, a retry, a stable run)
    /// wakes a workload when due.</summary>
    public TimeSpan QuietResyncInterval { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>A restart by hand that arrives this soon after the workload (re)started is the same restart: the caller
    /// asked for a fresh instance and it has one (a trigger storm makes one restart).</summary>
    public TimeSpan ManualRestartCoalesce { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Launches this supervisor has in flight at once (below the Launcher's own Launcher:MaxLaunchesInFlight,
    /// 256): the rest wait their turn.</summary>
    public int MaxLaunchesInFlight { get; set; } = 64;

    /// <summary>Deadline of one call to the Launcher or the Monitor (a stop waits for its grace on top).</summary>
    public TimeSpan CallTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Arm the Launcher with the next generation when the restart policy would restart at once (zero backoff,
    /// below the limit), so that it starts it the moment the instance fails, without a round trip through the
    /// supervisor (see Launcher.ArmSuccessor). False: every restart goes through the supervisor.</summary>
    public bool ArmSuccessors { get; set; } = true;

    /// <summary>How long after a start made by the supervisor its successor is armed. Arming spawns a held process and
    /// prepares its output: work for the restart path that would otherwise sit on the start path, doubling the
    /// Launcher's work while many workloads start at once (bench peers: 300 applies took 1.2 s armed at once, 0.5 s
    /// without arming). A crash before then restarts through the supervisor. After a restart by an armed successor
    /// the next one is armed at once (a crash loop keeps its fast path). Zero: armed right after every start.</summary>
    public TimeSpan ArmAfter { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How long after an arm that got no answer of the launcher's own (deadline, unavailable, internal) it is
    /// tried again.</summary>
    public TimeSpan ArmRetryUnreachable { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long after the Monitor refused a health target for a condition of the moment (FAILED_PRECONDITION:
    /// a tmux server the workload starts itself is not up yet) the targets are added again, for as long as it refuses.</summary>
    public TimeSpan TargetRetryInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Where the launchers are: <c>static</c> (default), one launcher, the "launcher" service; <c>registry</c>,
    /// the nodes the launchers announce in the registry (Launcher:RegisterNode), each called at its own address, with
    /// workloads placed on them and moved when a node is lost.</summary>
    public string Nodes { get; set; } = "static";

    /// <summary>How often a workload that no node fits tries to be placed again.</summary>
    public TimeSpan PlacementRetryInterval { get; set; } = TimeSpan.FromSeconds(1);
}
