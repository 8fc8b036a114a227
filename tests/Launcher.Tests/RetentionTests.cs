using Grpc.Core;
using Platform.Launcher.V1;
using Platform.Testing;

namespace Platform.Launcher.Tests;

/// <summary>
/// Exited instances are kept per workload up to Launcher:KeepExited and for Launcher:ExitedRetention, then forgotten
/// with their output: a crash loop does not grow the launcher's memory, store and disk by every run.
/// </summary>
public sealed class RetentionTests : LauncherTestBase
{
    protected override void Configure(LauncherOptions options)
    {
        options.KeepExited = 3;
        options.Templates["quick"] = new TemplateOptions { Executable = "/bin/sh", Args = ["-c", "echo ran; exit 1"] };
        options.Templates["brief"] = new TemplateOptions { Executable = "/bin/sh", Args = ["-c", "exit 0"] };
    }

    private async Task<List<Instance>> RunToExitAsync(string template, int count)
    {
        var ran = new List<Instance>();
        for (var i = 0; i < count; i++)
        {
            var instance = await LaunchAsync(template);
            ran.Add(await Eventually.ValueAsync(() => Client.GetInstanceAsync(new GetInstanceRequest { Id = instance.Id }).ResponseAsync,
                x => x.State == Instance.Types.State.Exited, Timeout, $"{instance.Id} to exit"));
        }
        return ran;
    }

    private async Task<List<string>> ExitedAsync(string workload) =>
        [.. (await Client.ListInstancesAsync(new ListInstancesRequest { Workload = workload, State = Instance.Types.State.Exited, PageSize = 1000 })).Instances.Select(i => i.Id)];

    private string OutputOf(string id) => Path.Combine(DataDirectory, "instances", id);

    [Fact]
    public async Task Only_the_newest_exited_instances_of_each_workload_are_kept_and_the_rest_are_gone_with_their_output()
    {
        var quick = await RunToExitAsync("quick", 5);
        var brief = await RunToExitAsync("brief", 2);

        // The three newest of 'quick', both of 'brief' (a workload's runs do not push out another's).
        Assert.Equal(quick.Skip(2).Select(i => i.Id).Order(), (await ExitedAsync("quick")).Order());
        Assert.Equal(brief.Select(i => i.Id).Order(), (await ExitedAsync("brief")).Order());
        foreach (var old in quick.Take(2))
        {
            await GrpcAssert.StatusAsync(StatusCode.NotFound, Client.GetInstanceAsync(new GetInstanceRequest { Id = old.Id }).ResponseAsync);
            Assert.False(Directory.Exists(OutputOf(old.Id)), $"the output of the forgotten {old.Id} is still there");
        }
        foreach (var kept in quick.Skip(2)) Assert.True(File.Exists(Path.Combine(OutputOf(kept.Id), "stdout.log")));

        // The store forgot them too: a launcher started again on the same data directory knows the same five.
        await Host.DisposeAsync();
        await InitializeAsync();
        Assert.Equal(quick.Skip(2).Select(i => i.Id).Order(), (await ExitedAsync("quick")).Order());
        Assert.Equal(2, (await ExitedAsync("brief")).Count);

        // And counting goes on from there: one more run pushes out the oldest kept.
        var next = await RunToExitAsync("quick", 1);
        // The exit is visible a moment before the oldest is forgotten (counted after the exit is published).
        var expected = quick.Skip(3).Concat(next).Select(i => i.Id).Order().ToList();
        Assert.Equal(expected, await Eventually.ValueAsync(async () => (await ExitedAsync("quick")).Order().ToList(),
            ids => ids.SequenceEqual(expected), Timeout, "the oldest kept run to be forgotten"));
    }

    [Fact]
    public async Task A_running_instance_is_never_forgotten_however_many_runs_end_around_it()
    {
        var sleeper = await Client.LaunchAsync(new LaunchRequest { Template = "sleeper", Workload = "quick" });
        await RunToExitAsync("quick", 4);
        Assert.Equal(3, (await Eventually.ValueAsync(() => ExitedAsync("quick"), ids => ids.Count == 3, Timeout, "the oldest run to be forgotten")).Count);
        var still = await Client.GetInstanceAsync(new GetInstanceRequest { Id = sleeper.Id });
        Assert.Equal(Instance.Types.State.Running, still.State);
    }
}

/// <summary>Past Launcher:ExitedRetention an exited instance is forgotten even when its workload has few.</summary>
public sealed class ExpiryTests : LauncherTestBase
{
    protected override void Configure(LauncherOptions options)
    {
        options.ExitedRetention = TimeSpan.FromMilliseconds(200);
        options.Templates["brief"] = new TemplateOptions { Executable = "/bin/sh", Args = ["-c", "exit 0"] };
    }

    [Fact]
    public async Task An_exited_instance_is_forgotten_once_its_retention_has_passed()
    {
        var instance = await LaunchAsync("brief");
        // The housekeeping timer (every 5 s) finds it past its retention and forgets it with its output.
        var gone = await Eventually.ValueAsync(async () =>
        {
            try
            {
                await Client.GetInstanceAsync(new GetInstanceRequest { Id = instance.Id });
                return false;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
            {
                return true;
            }
        }, g => g, TimeSpan.FromSeconds(20), $"{instance.Id} to be forgotten");
        Assert.True(gone);
        // Its output goes just after its record (the record first: nothing is served from a directory being removed).
        await Eventually.ValueAsync(() => Task.FromResult(Directory.Exists(Path.Combine(DataDirectory, "instances", instance.Id))), e => !e, TimeSpan.FromSeconds(5),
            $"{instance.Id}'s output directory to be removed");
    }
}
