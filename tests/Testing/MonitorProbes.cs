using Platform.Monitor.V1;
using Xunit;

namespace Platform.Testing;

/// <summary>What the AgentMonitor saw of a target, probe by probe.</summary>
public static class MonitorProbes
{
    /// <summary>
    /// Follows the target through <paramref name="probes"/> more probes (each a new last_probe_time) and returns the
    /// statuses seen: "nothing changed" observed over real probes rather than over a sleep.
    /// </summary>
    public static async Task<List<AgentStatus>> ProbedAsync(this AgentMonitor.AgentMonitorClient monitor, string id, int probes, TimeSpan timeout)
    {
        var seen = new List<AgentStatus>();
        var deadline = DateTime.UtcNow + timeout;
        // The target may not be there yet (the supervisor adds its targets just after it reports RUNNING).
        var last = (await Eventually.ValueAsync<AgentStatus?>(async () =>
        {
            try { return await monitor.GetStatusAsync(new GetStatusRequest { TargetId = id }); }
            catch (Grpc.Core.RpcException e) when (e.StatusCode == Grpc.Core.StatusCode.NotFound) { return null; }
        }, s => s is not null, timeout, $"target {id} to be added"))!.LastProbeTime;
        while (seen.Count < probes)
        {
            Assert.True(DateTime.UtcNow < deadline, $"{id} was probed {seen.Count} times of {probes} in {timeout}");
            var status = await monitor.GetStatusAsync(new GetStatusRequest { TargetId = id });
            if (!Equals(status.LastProbeTime, last))
            {
                seen.Add(status);
                last = status.LastProbeTime;
            }
            await Task.Delay(10);
        }
        return seen;
    }
}
