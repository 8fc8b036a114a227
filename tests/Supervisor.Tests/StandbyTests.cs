using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Platform.Supervisor.V1;
using Platform.Testing;

namespace Platform.Supervisor.Tests;

/// <summary>Two Supervisor processes on one store: one acts, the other stands by and takes over after a SIGKILL.</summary>
public sealed class StandbyTests : SupervisorTestBase
{
    [Fact]
    public async Task A_second_supervisor_on_the_same_store_stands_by_changing_nothing_and_takes_over_after_a_SIGKILL_without_a_second_instance()
    {
        await ApplyAsync(Shell("single", "exec sleep 300"));
        var first = await RunningAsync("single", 1);

        // The second one: same data directory and dependencies. It serves health, NOT_SERVING, and refuses every call.
        var acting = SupervisorProcess;
        var standby = await ServiceProcess.StartAsync(SupervisorDll, Sub("supervisor"), SupervisorEnvironment(), until: HealthCheckResponse.Types.ServingStatus.NotServing);
        try
        {
            using var channel = GrpcChannel.ForAddress(standby.GrpcUrl);
            var standbyClient = new V1.Supervisor.SupervisorClient(channel);
            var refused = await Assert.ThrowsAsync<RpcException>(() => standbyClient.ApplyWorkloadAsync(new ApplyWorkloadRequest { Workload = Shell("other", "exec sleep 300") }).ResponseAsync);
            Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
            Assert.Contains("stands by", refused.Status.Detail);
            await Task.Delay(1500); // (it looks for the lock twice a second)
            Assert.Equal([first.Status.InstanceId], (await LiveInstancesAsync("single")).Select(i => i.Id));
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, await AppHostProcess.CheckHealthAsync(SupervisorProcess.GrpcUrl));

            // The acting one SIGKILLed: the standby acts within a second or so, adopts the running instance (same
            // generation, same process) and never starts a second one (sampled every 50 ms meanwhile).
            await SupervisorProcess.KillAsync();
            var killed = DateTime.UtcNow;
            var most = 0;
            while (await AppHostProcess.CheckHealthAsync(standby.GrpcUrl) != HealthCheckResponse.Types.ServingStatus.Serving)
            {
                Assert.True(DateTime.UtcNow - killed < Timeout, "the standby did not take over");
                most = Math.Max(most, (await LiveInstancesAsync("single")).Count);
                await Task.Delay(50);
            }
            var adopted = await Eventually.ValueAsync(() => standbyClient.GetWorkloadAsync(new GetWorkloadRequest { Name = "single" }).ResponseAsync,
                w => w.Status.Phase == WorkloadStatus.Types.Phase.Running, Timeout, "the workload running");
            // Reconciled with the launcher meanwhile (Supervisor:ResyncInterval is 1 s here): still the same instance.
            for (var i = 0; i < 40; i++)
            {
                most = Math.Max(most, (await LiveInstancesAsync("single")).Count);
                await Task.Delay(50);
            }
            adopted = await standbyClient.GetWorkloadAsync(new GetWorkloadRequest { Name = "single" });
            Assert.Equal((1L, first.Status.InstanceId, first.Status.Pid), (adopted.Status.Generation, adopted.Status.InstanceId, adopted.Status.Pid));
            Assert.Equal([first.Status.InstanceId], (await LiveInstancesAsync("single")).Select(i => i.Id));
            Assert.Equal(1, most);
        }
        finally
        {
            await acting.DisposeAsync(); // killed already, unless the test failed before
            UseSupervisor(standby); // stopped (and its workloads deleted) by DisposeAsync
        }
    }
}
