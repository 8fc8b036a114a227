using Grpc.Core;
using Platform.ProcessControl;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Tests;

public sealed class DegradedTests : SupervisorTestBase
{
    [Fact]
    public async Task With_the_launcher_down_workloads_are_left_alone_health_says_so_and_reconciling_resumes_when_it_is_back()
    {
        await ApplyAsync(Shell("resilient", "exec sleep 300", new RestartPolicy { InitialBackoff = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)) }));
        var first = await RunningAsync("resilient", 1);
        using var http = new HttpClient();
        var healthy = await Testing.Eventually.ValueAsync(() => HealthAsync(http), h => h == "Healthy", Timeout, "a healthy supervisor");

        await LauncherHost.DisposeAsync();
        LauncherHost = null!;
        var degraded = await Testing.Eventually.ValueAsync(async () => await (await http.GetAsync(SupervisorProcess.HttpUrl + "/health")).Content.ReadAsStringAsync(),
            h => h.Contains("launcher (breaker"), Timeout, "health to name the launcher");
        Assert.Equal("Degraded", await HealthAsync(http));
        Assert.Contains("running workloads are left alone", degraded);

        // Nothing is restarted blindly: not by hand, and not when the process dies unseen.
        await AssertStatus(StatusCode.Unavailable, Client.RestartWorkloadAsync(new RestartWorkloadRequest { Name = "resilient" }).ResponseAsync, "unreachable");
        var identity = ProcFs.Identify((int)first.Status.Pid)!.Value;
        ProcessTree.Signal(identity, 9);
        await Task.Delay(1500);
        var meanwhile = await Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "resilient" });
        Assert.Equal(1, meanwhile.Status.Generation);
        Assert.Equal(first.Status.InstanceId, meanwhile.Status.InstanceId);

        // The launcher comes back (same port, same records): the supervisor reconciles, learns of the exit, restarts.
        await StartLauncherAsync();
        var second = await RunningAsync("resilient", 2);
        Assert.NotEqual(first.Status.InstanceId, second.Status.InstanceId);
        Assert.Single(await LiveInstancesAsync("resilient"));
        await Testing.Eventually.ValueAsync(() => HealthAsync(http), h => h == "Healthy", Timeout, "health to recover");
        Assert.NotNull(healthy);
    }

    private async Task<string> HealthAsync(HttpClient http)
    {
        using var response = await http.GetAsync(SupervisorProcess.HttpUrl + "/health");
        using var json = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return json.RootElement.GetProperty("status").GetString()!;
    }
}
