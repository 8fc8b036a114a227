using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.ClientFactory;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Platform.ServiceDefaults;

/// <summary>
/// Reports whether a platform service this one depends on answers SERVING over grpc.health.v1. A dependency that
/// is down makes this service Degraded, not Unhealthy: it keeps serving what it can (docs/architecture.md §1).
/// </summary>
public sealed class DependencyHealthCheck(GrpcClientFactory clients, string dependency) : IHealthCheck
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(2);

    public static string ClientName(string dependency) => $"health:{dependency}";

    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var client = clients.CreateClient<Health.HealthClient>(ClientName(dependency));
        try
        {
            var reply = await client.CheckAsync(new HealthCheckRequest(),
                deadline: DateTime.UtcNow.Add(Deadline), cancellationToken: cancellationToken);
            return reply.Status == HealthCheckResponse.Types.ServingStatus.Serving
                ? HealthCheckResult.Healthy($"{dependency} is serving")
                : HealthCheckResult.Degraded($"{dependency} answers {reply.Status}");
        }
        catch (RpcException e)
        {
            return HealthCheckResult.Degraded($"{dependency} is unreachable: {e.Status.StatusCode} {e.Status.Detail}");
        }
        catch (InvalidOperationException e)
        {
            // Service discovery has no endpoint for the dependency: a configuration problem, reported as such.
            return HealthCheckResult.Degraded($"{dependency} has no known endpoint: {e.Message}");
        }
    }
}
