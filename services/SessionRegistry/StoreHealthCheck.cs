using Microsoft.Extensions.Diagnostics.HealthChecks;
using Platform.SessionRegistry.Store;

namespace Platform.SessionRegistry;

/// <summary>The store answers reads, and the writer loop is running.</summary>
public sealed class StoreHealthCheck(ISessionStore store, RegistryEngine engine, ExpirySweeper sweeper) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            store.List("", Registry.V1.Session.Types.State.Unspecified, "", 1);
        }
        catch (Exception e)
        {
            return Task.FromResult(HealthCheckResult.Unhealthy($"the store does not answer: {e.Message}"));
        }

        if (engine.ExecuteTask is { IsCompleted: true })
            return Task.FromResult(HealthCheckResult.Unhealthy("the registry's writer has stopped"));

        var data = new Dictionary<string, object>
        {
            ["revision"] = engine.Hub.Revision,
            ["liveSessions"] = engine.Leases.Count,
            ["watchers"] = engine.Hub.WatcherCount,
            ["sweeperLeader"] = sweeper.IsLeader,
            ["gcHeapBytes"] = GC.GetGCMemoryInfo().HeapSizeBytes,
            ["committedWrites"] = engine.CommittedWrites,
            ["commits"] = engine.Commits,
        };
        return Task.FromResult(HealthCheckResult.Healthy($"revision {engine.Hub.Revision}, {engine.Leases.Count} live sessions", data));
    }
}
