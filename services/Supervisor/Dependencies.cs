using Grpc.Core;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Polly;
using Polly.CircuitBreaker;

namespace Platform.Supervisor;

/// <summary>
/// The launchers (one per node, see <see cref="NodeSet"/>) and the Monitor, each behind a circuit breaker (Polly): after
/// repeated UNAVAILABLE or deadline failures a breaker opens for 5 s and calls fail at once instead of piling up. Nothing
/// is restarted while a workload's launcher is down (<see cref="IsUnreachable"/>); the health report names the breakers
/// and the event streams that are down.
/// </summary>
public sealed class Dependencies : IHealthCheck
{
    private readonly CircuitBreakerStateProvider _monitorState = new();

    public Dependencies(NodeSet nodes, Monitor.V1.AgentMonitor.AgentMonitorClient monitor, TimeProvider time,
        Microsoft.Extensions.Options.IOptions<SupervisorOptions> options)
    {
        Nodes = nodes;
        Monitor = monitor;
        _launches = new SemaphoreSlim(Math.Max(1, options.Value.MaxLaunchesInFlight));
        _monitorPipeline = Breaker(_monitorState, time);
    }

    /// <summary>A dependency's breaker: open for 5 s once half of at least 3 calls in 10 s went unanswered.</summary>
    public static ResiliencePipeline Breaker(CircuitBreakerStateProvider state, TimeProvider time) =>
        new ResiliencePipelineBuilder { TimeProvider = time }
            .AddCircuitBreaker(new CircuitBreakerStrategyOptions
            {
                FailureRatio = 0.5,
                MinimumThroughput = 3,
                SamplingDuration = TimeSpan.FromSeconds(10),
                BreakDuration = TimeSpan.FromSeconds(5),
                ShouldHandle = new PredicateBuilder().Handle<RpcException>(IsUnreachable),
                StateProvider = state,
            })
            .Build();

    public NodeSet Nodes { get; }
    public Monitor.V1.AgentMonitor.AgentMonitorClient Monitor { get; }
    private readonly ResiliencePipeline _monitorPipeline;

    /// <summary>Whether the Monitor's status stream is connected.</summary>
    public volatile bool MonitorStatuses;

    /// <summary>A call to the launcher of <paramref name="node"/>; UNAVAILABLE at once when that node is not known
    /// (lost, or not registered yet).</summary>
    public Task<T> CallLauncherAsync<T>(string node, Func<Launcher.V1.Launcher.LauncherClient, CancellationToken, Task<T>> call, CancellationToken cancellationToken)
    {
        var client = Node(node);
        return client.Pipeline.ExecuteAsync(async ct => await call(client.Client, ct), cancellationToken).AsTask();
    }

    /// <summary>
    /// A launch on <paramref name="node"/>, after waiting for one of <see cref="SupervisorOptions.MaxLaunchesInFlight"/>
    /// places: many workloads applied at once start as fast as the Launcher takes them, instead of running into its own
    /// limit (RESOURCE_EXHAUSTED) and failing their applies. Launches made at the same time go to the node together
    /// (<see cref="LaunchBatcher"/>); <paramref name="traceParent"/> is the trace context the child continues, and
    /// <paramref name="span"/> the caller's span of it, when recorded.
    /// </summary>
    public async Task<Launcher.V1.Instance> LaunchAsync(string node, Launcher.V1.LaunchRequest request, System.Diagnostics.Activity? span, string? traceParent, DateTime deadline, CancellationToken cancellationToken)
    {
        await _launches.WaitAsync(cancellationToken);
        try
        {
            return await Node(node).Launches.LaunchAsync(request, span, traceParent, deadline, cancellationToken);
        }
        finally
        {
            _launches.Release();
        }
    }

    private readonly SemaphoreSlim _launches;

    private NodeClient Node(string node) =>
        Nodes.Get(node) ?? throw new RpcException(new Status(StatusCode.Unavailable, $"node '{node}' is not registered (lost, or not back yet)"));

    public Task<T> CallMonitorAsync<T>(Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken) =>
        _monitorPipeline.ExecuteAsync(async ct => await call(ct), cancellationToken).AsTask();

    /// <summary>The dependency did not answer (down, unreachable, too slow, or its breaker is open).</summary>
    public static bool IsUnreachable(Exception e) =>
        e is BrokenCircuitException ||
        e is RpcException { StatusCode: StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Unknown or StatusCode.Internal };

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var nodes = Nodes.All;
        var data = new Dictionary<string, object>
        {
            ["monitor_breaker"] = _monitorState.CircuitState.ToString(),
            ["monitor_statuses"] = MonitorStatuses ? "connected" : "disconnected",
            ["nodes"] = nodes.Count,
        };
        var down = new List<string>();
        foreach (var node in nodes)
        {
            var label = nodes.Count == 1 && Nodes.Static ? "launcher" : $"node {node.Name}";
            data[Nodes.Static ? "launcher_breaker" : $"node_{node.Name}_breaker"] = node.BreakerState.CircuitState.ToString();
            data[Nodes.Static ? "launcher_events" : $"node_{node.Name}_events"] = node.EventsConnected ? "connected" : "disconnected";
            if (node.BreakerState.CircuitState != CircuitState.Closed || !node.EventsConnected)
                down.Add($"{label} (breaker {node.BreakerState.CircuitState}, events {(node.EventsConnected ? "connected" : "disconnected")})");
        }
        if (!Nodes.Static && nodes.Count == 0) down.Add("launchers (no node registered)");
        if (_monitorState.CircuitState != CircuitState.Closed || !MonitorStatuses) down.Add($"monitor (breaker {_monitorState.CircuitState}, statuses {(MonitorStatuses ? "connected" : "disconnected")})");
        return Task.FromResult(down.Count == 0
            ? HealthCheckResult.Healthy(Nodes.Static ? "launcher and monitor reachable" : $"{nodes.Count} nodes and the monitor reachable", data)
            : HealthCheckResult.Degraded($"degraded: {string.Join("; ", down)} down; running workloads are left alone", data: data));
    }
}
