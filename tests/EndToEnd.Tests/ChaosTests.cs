using Platform.Testing;
using Platform.Testing.Chaos;
using Xunit.Abstractions;

namespace Platform.EndToEnd.Tests;

/// <summary>
/// The whole platform in the real AppHost under load, each service SIGKILLed twice in turn (see <see cref="ChaosRun"/>),
/// then a minute's soak: nothing acknowledged is lost, no workload ever has two instances, steady workloads run
/// through every fault, every watcher resumes without a gap or a duplicate, nothing is left behind, and the services'
/// memory, descriptors and threads stay flat.
/// </summary>
[Collection(AppHostCollection.Name)]
public sealed class ChaosTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly string _stateDirectory = Directory.CreateTempSubdirectory("platform-chaos-").FullName;
    private AppHostProcess? _appHost;

    [Fact]
    public async Task SIGKILL_of_each_service_under_load_loses_doubles_and_leaves_nothing_and_a_soak_stays_flat()
    {
        _appHost = AppHostProcess.Start(AppHostProcess.ProjectOutput(typeof(ChaosTests).Assembly, "Platform.AppHost"), _stateDirectory);
        var report = await new ChaosRun(_appHost, new ChaosOptions(), output.WriteLine).RunAsync();
        foreach (var line in ChaosTable.Lines(report)) output.WriteLine(line);

        Assert.Empty(report.Failures);
        Assert.All(ChaosRun.Services, s => Assert.Equal(2, report.Kills[s].Count));
        Assert.True(report.SessionsAcknowledged > 200, $"{report.SessionsAcknowledged} sessions acknowledged");
        Assert.True(report.WorkloadsAcknowledged > 20, $"{report.WorkloadsAcknowledged} workloads acknowledged");
        Assert.True(report.Samples > 300, $"{report.Samples} samples of /proc");
        // Every watcher saw the service it watches go away and came back to it.
        Assert.All(report.Watchers, w => Assert.True(w.Connections > 2, $"{w.Name} opened {w.Connections} streams"));
        Assert.All(report.Watchers, w => Assert.True(w.Events > 0, $"{w.Name} received nothing"));

        // Flat under a steady load: no descriptor or thread leaked, memory within a margin a GC heap moves by.
        foreach (var (name, start, end) in report.Soak)
        {
            Assert.True(end.Fds <= start.Fds + 8, $"{name}: {start.Fds} fds at the soak's start, {end.Fds} at its end");
            Assert.True(end.Threads <= start.Threads + 8, $"{name}: {start.Threads} threads (processes) at the soak's start, {end.Threads} at its end");
            Assert.True(end.RssMiB <= start.RssMiB * 1.25 + 16, $"{name}: {start.RssMiB:0.0} MiB at the soak's start, {end.RssMiB:0.0} at its end");
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_appHost is not null) await _appHost.DisposeAsync();
        try { Directory.Delete(_stateDirectory, recursive: true); } catch (IOException) { }
    }
}
