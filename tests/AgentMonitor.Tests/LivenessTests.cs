using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Platform.AgentMonitor.Probes;

namespace Platform.AgentMonitor.Tests;

public sealed class LivenessTests
{
    [Fact]
    public async Task Alive_fails_when_the_probe_loop_has_not_turned_for_the_stall_time_and_recovers_when_it_turns()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var options = Options.Create(new MonitorOptions { StallAfter = TimeSpan.FromSeconds(30) });
        await using var tmux = new TmuxServers(time, options);
        using var clients = new ProbeClients();
        using var engine = new MonitorEngine(options, time, new ProbeFactory(options, clients, tmux, null!), NullLogger<MonitorEngine>.Instance);
        var context = new HealthCheckContext { Registration = new HealthCheckRegistration("probe-loop", engine, HealthStatus.Unhealthy, null) };

        Assert.Equal(HealthStatus.Healthy, (await engine.CheckHealthAsync(context)).Status);
        // The loop is not running: it does not turn. 31 s later that is a stall.
        time.Advance(TimeSpan.FromSeconds(31));
        var stalled = await engine.CheckHealthAsync(context);
        Assert.Equal(HealthStatus.Unhealthy, stalled.Status);
        Assert.Contains("has not turned for 31s", stalled.Description);

        await engine.StartAsync(CancellationToken.None);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while ((await engine.CheckHealthAsync(context)).Status != HealthStatus.Healthy && DateTime.UtcNow < deadline) await Task.Delay(10);
        Assert.Equal(HealthStatus.Healthy, (await engine.CheckHealthAsync(context)).Status);
        await engine.StopAsync(CancellationToken.None);
        Assert.Equal(HealthStatus.Unhealthy, (await engine.CheckHealthAsync(context)).Status);
    }
}
