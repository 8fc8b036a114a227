using Platform.Testing;
using Platform.Testing.Chaos;
using Platform.Testing.HostileInput;
using Xunit.Abstractions;

namespace Platform.EndToEnd.Tests;

/// <summary>
/// Without the token, random and boundary messages to every RPC are refused properly. Then the whole platform in the
/// real AppHost under load, each service SIGKILLed twice in turn (see <see cref="ChaosRun"/>),
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
        // First the hostile-input property without the token (Supervisor.Tests sends it with one): every RPC of every
        // service refuses it properly, none does anything, and all of them serve on.
        var state = await _appHost.WaitForAllServingAsync(PlatformAppTests.Timeout);
        var fuzz = await FuzzRun.RunAsync(state, authenticated: false, unary: 20, streaming: 5);
        foreach (var line in FuzzRun.Lines(fuzz)) output.WriteLine(line);
        Assert.All(fuzz, f => Assert.Empty(f.Improper));
        Assert.All(fuzz, f => Assert.Equal(0, f.Ok));
        Assert.All(fuzz, f => Assert.True(f.ServingAfter, $"{f.Service} is not serving after the fuzz"));

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

        // Flat under a steady load: no descriptor, thread or process leaked (the thread pool's workers, which grow and
        // shrink with the machine's contention, are not counted). Memory is only bounded: under this churn
        // each service's RSS still grows by 10-40 MiB in the minute (bench reliability measures longer soaks).
        foreach (var (name, start, _, end) in report.Soak)
        {
            Assert.True(end.Fds <= start.Fds + 8, $"{name}: {start.Fds} fds at the soak's start, {end.Fds} at its end");
            Assert.True(end.Threads <= start.Threads + 8, $"{name}: {start.Threads} threads (processes) at the soak's start, {end.Threads} at its end");
            Assert.True(end.RssMiB <= start.RssMiB + 80, $"{name}: {start.RssMiB:0.0} MiB at the soak's start, {end.RssMiB:0.0} at its end");
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_appHost is not null) await _appHost.DisposeAsync();
        try { Directory.Delete(_stateDirectory, recursive: true); } catch (IOException) { }
    }
}
