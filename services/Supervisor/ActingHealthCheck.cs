using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Platform.Supervisor;

/// <summary>Healthy while this Supervisor acts; Unhealthy, saying why, while it stands by for another.</summary>
public sealed class ActingHealthCheck(SupervisorEngine engine, ActingLock acting) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(engine.Acting
            ? HealthCheckResult.Healthy("acting")
            : HealthCheckResult.Unhealthy($"standby: another Supervisor acts on this store ({acting.Path}); this one takes over when it stops"));
}
