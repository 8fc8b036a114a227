namespace Platform.Supervisor;

/// <summary>The labels by which the Supervisor finds its own instances and monitor targets again.</summary>
public static class WorkloadLabels
{
    public const string Workload = "platform.supervisor/workload";
    public const string Generation = "platform.supervisor/generation";
    /// <summary>On monitor targets: which of the workload's checks it is (health or heartbeat).</summary>
    public const string Check = "platform.supervisor/check";
    /// <summary>Monitor target ids: supervisor/NAME/GENERATION/CHECK (found again by their labels, never by parsing the id).</summary>
    public const string TargetPrefix = "supervisor/";
}
