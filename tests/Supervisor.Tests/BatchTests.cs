using Grpc.Core;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Tests;

/// <summary>ApplyWorkloads against a real Supervisor process, Launcher and registry: many workloads in one call, each
/// result its own.</summary>
public sealed class BatchTests : SupervisorTestBase
{
    [Fact]
    public async Task Many_workloads_in_one_call_all_start_and_a_refused_one_does_not_stop_the_others()
    {
        var batch = Enumerable.Range(0, 40).Select(i => Shell($"batch-{i:00}", "exec sleep 300")).ToList();
        var inverted = Shell("batch-inverted", "exec sleep 300", new RestartPolicy
        {
            InitialBackoff = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(5)),
            MaxBackoff = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
        });
        var missing = new Workload { Name = "batch-missing", Launch = new Launcher.V1.LaunchSpec { Template = "no-such-template" } };
        batch.Insert(10, inverted);
        batch.Insert(20, missing);

        var response = await Client.ApplyWorkloadsAsync(new ApplyWorkloadsRequest { Workloads = { batch } });

        Assert.Equal(batch.Select(w => w.Name), response.Results.Select(r => r.Name)); // the request's order
        var refusedInverted = response.Results[10];
        Assert.Equal((int)StatusCode.InvalidArgument, refusedInverted.Code);
        Assert.Contains("max_backoff", refusedInverted.Message, StringComparison.Ordinal);
        Assert.Null(refusedInverted.Workload);
        var refusedMissing = response.Results[20];
        Assert.Equal((int)StatusCode.NotFound, refusedMissing.Code);
        Assert.Contains("no-such-template", refusedMissing.Message, StringComparison.Ordinal);
        var created = response.Results.Where(r => r.Code == 0).ToList();
        Assert.Equal(40, created.Count);
        Assert.All(created, r => Assert.Equal((ApplyResult.Types.Change.Created, Phase.Running, 1L), (r.Change, r.Workload.Status.Phase, r.Workload.Status.Generation)));
        // Each has its own live process at the launcher; the refused ones left nothing.
        foreach (var r in created) Assert.Equal(r.Workload.Status.InstanceId, Assert.Single(await LiveInstancesAsync(r.Name)).Id);
        await AssertStatus(StatusCode.NotFound, Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "batch-missing" }).ResponseAsync);
        await AssertStatus(StatusCode.NotFound, Client.GetWorkloadAsync(new GetWorkloadRequest { Name = "batch-inverted" }).ResponseAsync);

        // The same batch again (without the refused ones): unchanged; one with a new label: configured.
        var again = batch.Where(w => w != inverted && w != missing).Select(w => w.Clone()).ToList();
        again[3].Labels["team"] = "b";
        var second = await Client.ApplyWorkloadsAsync(new ApplyWorkloadsRequest { Workloads = { again } });
        Assert.Equal(ApplyResult.Types.Change.Configured, second.Results[3].Change);
        Assert.All(second.Results.Where((_, i) => i != 3), r => Assert.Equal(ApplyResult.Types.Change.Unchanged, r.Change));
        Assert.All(second.Results, r => Assert.Equal(1L, r.Workload.Status.Generation));
    }

    [Fact]
    public async Task A_call_with_no_workloads_too_many_or_a_name_twice_is_refused_whole_and_applies_nothing()
    {
        var empty = await AssertStatus(StatusCode.InvalidArgument, Client.ApplyWorkloadsAsync(new ApplyWorkloadsRequest()).ResponseAsync);
        Assert.Contains("workloads: is empty", empty.Status.Detail, StringComparison.Ordinal);

        var twice = await AssertStatus(StatusCode.InvalidArgument, Client.ApplyWorkloadsAsync(new ApplyWorkloadsRequest
        {
            Workloads = { Shell("twice-a", "exec sleep 300"), Shell("twice-b", "exec sleep 300"), Shell("twice-a", "exec sleep 1") },
        }).ResponseAsync);
        Assert.Contains("'twice-a' 2 times", twice.Status.Detail, StringComparison.Ordinal);

        var many = await AssertStatus(StatusCode.InvalidArgument, Client.ApplyWorkloadsAsync(new ApplyWorkloadsRequest
        {
            Workloads = { Enumerable.Range(0, 1001).Select(i => Shell($"many-{i}", "exec sleep 300")) },
        }).ResponseAsync);
        Assert.Contains("1001 workloads; at most 1000", many.Status.Detail, StringComparison.Ordinal);

        var listed = await Client.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000 });
        Assert.Empty(listed.Workloads);
    }
}
