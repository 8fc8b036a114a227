using Aspire.Hosting.ApplicationModel;

namespace Platform.AppHost;

/// <summary>What our extensions read of a resource's snapshot, in one place.</summary>
internal static class ResourceSnapshots
{
    /// <summary>The pid DCP reports for a running executable or project; null otherwise.</summary>
    public static int? Pid(CustomResourceSnapshot? s) =>
        s?.State?.Text == KnownResourceStates.Running &&
        s.Properties.FirstOrDefault(p => p.Name == "executable.pid")?.Value is { } value &&
        int.TryParse(value.ToString(), out var pid) ? pid : null;

    /// <summary>The process has ended (by itself, on request, or without ever starting).</summary>
    public static bool IsStopped(string? state) =>
        state == KnownResourceStates.Exited || state == KnownResourceStates.Finished || state == KnownResourceStates.FailedToStart;
}
