using Grpc.Core;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Platform.Registry.V1;
using Platform.ServiceDefaults;

namespace Platform.Launcher;

/// <summary>
/// Announces this Launcher as a node in the registry (see <see cref="Nodes"/>): a session of the reserved workload
/// <c>platform-node</c> named after the node, with its labels, its own gRPC address, its capacity and containment mode,
/// under a lease of <see cref="LauncherOptions.NodeLease"/> renewed four times per lease. When the lease ran out anyway
/// (the launcher was stopped or cut off longer than the lease) the node registers again: the Supervisor has treated it
/// as lost meanwhile, and fences its old instances when it comes back. Registering again under the same name while the
/// old session lives (a restart of the launcher) takes that session over with the new address: the registry keeps one
/// live session per (workload, instance). On when <see cref="LauncherOptions.RegisterNode"/> is set.
/// </summary>
public sealed class NodeRegistration(
    SessionRegistry.SessionRegistryClient registry,
    InstanceManager instances,
    Containment containment,
    IOptions<LauncherOptions> options,
    IConfiguration configuration,
    ILogger<NodeRegistration> logger) : BackgroundService, IHealthCheck
{
    private static readonly TimeSpan CallDeadline = TimeSpan.FromSeconds(2);
    private string _sessionId = "";
    private volatile string? _lastError = "not registered yet";

    /// <summary>The node's gRPC address as others reach it: Launcher:Address, else its own grpc endpoint's URL (a
    /// wildcard host replaced by the host name).</summary>
    public string Address
    {
        get
        {
            if (options.Value.Address is { Length: > 0 } address) return address;
            var url = configuration["Kestrel:Endpoints:grpc:Url"] ?? configuration["ASPNETCORE_URLS"]?.Split(';')[0] ?? "";
            return url.Replace("://0.0.0.0", $"://{System.Environment.MachineName}", StringComparison.Ordinal)
                .Replace("://*", $"://{System.Environment.MachineName}", StringComparison.Ordinal)
                .Replace("://+", $"://{System.Environment.MachineName}", StringComparison.Ordinal)
                .Replace("://[::]", $"://{System.Environment.MachineName}", StringComparison.Ordinal);
        }
    }

    public RegisterSessionRequest Request()
    {
        var o = options.Value;
        return new RegisterSessionRequest
        {
            Workload = Nodes.Workload,
            Instance = instances.Node,
            Node = instances.Node,
            Pid = System.Environment.ProcessId,
            Labels = { o.Labels },
            Attributes =
            {
                [Nodes.AddressAttribute] = Address,
                [Nodes.CapacityAttribute] = o.Capacity.ToString(System.Globalization.CultureInfo.InvariantCulture),
                [Nodes.ContainmentAttribute] = containment.UsesCgroups ? "cgroup" : "subreaper",
            },
            Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(o.NodeLease),
        };
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var lease = options.Value.NodeLease;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                if (_sessionId.Length == 0)
                {
                    var session = await registry.RegisterSessionAsync(Request(), deadline: DateTime.UtcNow + CallDeadline, cancellationToken: stoppingToken);
                    _sessionId = session.Id;
                    logger.LogInformation("Registered node {Node} at {Address} (session {Session}, lease {Lease})", instances.Node, Address, session.Id, lease);
                }
                else
                {
                    var reply = await registry.HeartbeatAsync(new HeartbeatRequest { Ids = { _sessionId } }, deadline: DateTime.UtcNow + CallDeadline, cancellationToken: stoppingToken);
                    if (reply.RenewedIds.Count == 0)
                    {
                        logger.LogWarning("The lease of node {Node} ran out (session {Session}); registering it again: the supervisor has moved its workloads meanwhile", instances.Node, _sessionId);
                        _sessionId = "";
                        continue;
                    }
                }
                if (_lastError is not null && _sessionId.Length > 0) _lastError = null;
                await Task.Delay(lease / 4, stoppingToken);
            }
            catch (Exception) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is RpcException or InvalidOperationException)
            {
                var error = e is RpcException rpc ? $"{rpc.StatusCode}: {rpc.Status.Detail}" : e.Message;
                if (_lastError != error) logger.LogWarning("Cannot renew the lease of node {Node}: {Error}", instances.Node, error);
                _lastError = error;
                try
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(500), stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(_lastError is null
            ? HealthCheckResult.Healthy($"node {instances.Node} registered at {Address}")
            : HealthCheckResult.Degraded($"node {instances.Node} is not registered: {_lastError}"));
}
