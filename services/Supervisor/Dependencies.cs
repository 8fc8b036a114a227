using Grpc.Core;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Polly;
using Polly.CircuitBreaker;

namespace Platform.Supervisor;

/// <summary>
/// The Launcher and the Monitor behind circuit breakers (Polly): after repeated UNAVAILABLE or deadline failures a
/// breaker opens for 5 s and calls fail at once instead of piling up. Nothing is restarted while a dependency is down
/// (<see cref="IsUnreachable"/>); the health report names the breakers and the event streams that are down.
/// </summary>
public sealed class Dependencies : IHealthCheck
{
    private readonly CircuitBreakerStateProvider _launcherState = new();
    private readonly CircuitBreakerStateProvider _monitorState = new();

    public Dependencies(Launcher.V1.Launcher.LauncherClient launcher, Monitor.V1.AgentMonitor.AgentMonitorClient monitor, TimeProvider time,
        Microsoft.Extensions.Options.IOptions<SupervisorOptions> options)
    {
        Launcher = launcher;
        Monitor = monitor;
        _launches = new SemaphoreSlim(Math.Max(1, options.Value.MaxLaunchesInFlight));
        _launcherPipeline = Breaker(_launcherState, time);
        _monitorPipeline = Breaker(_monitorState, time);
    }

    public Launcher.V1.Launcher.LauncherClient Launcher { get; }
    public Monitor.V1.AgentMonitor.AgentMonitorClient Monitor { get; }
    private readonly ResiliencePipeline _launcherPipeline;
    private readonly ResiliencePipeline _monitorPipeline;

    /// <summary>Whether the Launcher's and the Monitor's event streams are connected.</summary>
    public volatile bool LauncherEvents;
    public volatile bool MonitorStatuses;

    private static ResiliencePipeline Breaker(CircuitBreakerStateProvider state, TimeProvider time) =>
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

    public Task<T> CallLauncherAsync<T>(Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken) =>
        _launcherPipeline.ExecuteAsync(async ct => await call(ct), cancellationToken).AsTask();

    /// <summary>
    /// A launch, after waiting for one of <see cref="SupervisorOptions.MaxLaunchesInFlight"/> places: many workloads
    /// applied at once start as fast as the Launcher takes them, instead of running into its own limit
    /// (RESOURCE_EXHAUSTED) and failing their applies.
    /// </summary>
    public async Task<T> LaunchAsync<T>(Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken)
    {
        await _launches.WaitAsync(cancellationToken);
        try
        {
            return await CallLauncherAsync(call, cancellationToken);
        }
        finally
        {
            _launches.Release();
        }
    }

    private readonly SemaphoreSlim _launches;

    public Task<T> CallMonitorAsync<T>(Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken) =>
        _monitorPipeline.ExecuteAsync(async ct => await call(ct), cancellationToken).AsTask();

    /// <summary>The dependency did not answer (down, unreachable, too slow, or its breaker is open).</summary>
    public static bool IsUnreachable(Exception e) =>
        e is BrokenCircuitException ||
        e is RpcException { StatusCode: StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Unknown or StatusCode.Internal };

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var data = new Dictionary<string, object>
        {
            ["launcher_breaker"] = _launcherState.CircuitState.ToString(),
            ["monitor_breaker"] = _monitorState.CircuitState.ToString(),
            ["launcher_events"] = LauncherEvents ? "connected" : "disconnected",
            ["monitor_statuses"] = MonitorStatuses ? "connected" : "disconnected",
        };
        var down = new List<string>();
        if (_launcherState.CircuitState != CircuitState.Closed || !LauncherEvents) down.Add($"launcher (breaker {_launcherState.CircuitState}, events {(LauncherEvents ? "connected" : "disconnected")})");
        if (_monitorState.CircuitState != CircuitState.Closed || !MonitorStatuses) down.Add($"monitor (breaker {_monitorState.CircuitState}, statuses {(MonitorStatuses ? "connected" : "disconnected")})");
        return Task.FromResult(down.Count == 0
            ? HealthCheckResult.Healthy("launcher and monitor reachable", data)
            : HealthCheckResult.Degraded($"degraded: {string.Join("; ", down)} down; running workloads are left alone", data: data));
    }
}
