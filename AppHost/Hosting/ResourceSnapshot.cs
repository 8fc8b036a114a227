namespace Platform.AppHost.Hosting;

/// <summary>Resource states, with Aspire's names.</summary>
public enum ResourceState
{
    NotStarted,
    Waiting,
    Starting,
    Running,
    Stopping,
    Exited,
    FailedToStart,
    Finished,
}

public enum ResourceHealth
{
    Unknown,
    Healthy,
    Degraded,
    Unhealthy,
}

/// <summary>What the engine knows of one resource at a moment; apphost.json holds one per resource.</summary>
public sealed record ResourceSnapshot(
    string Name,
    ResourceState State,
    ResourceHealth Health,
    int? Pid,
    int Restarts,
    int? ExitCode,
    IReadOnlyDictionary<string, string> Endpoints,
    string? InstanceId)
{
    /// <summary>Serving: WaitFor is satisfied (Degraded counts: the resource serves, a dependency of its own is down).</summary>
    public bool IsReady => State == ResourceState.Running && Health is ResourceHealth.Healthy or ResourceHealth.Degraded;
}
