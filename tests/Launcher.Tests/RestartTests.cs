using Grpc.Net.Client;
using Microsoft.Data.Sqlite;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Launcher.Tests;

/// <summary>The launcher as its own process, SIGKILLed while its children run, then started again.</summary>
public sealed class RestartTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);
    private readonly string _data = Directory.CreateTempSubdirectory("launcher-restart-").FullName;
    private readonly List<ProcessIdentity> _strays = [];
    private static string LauncherDll => typeof(InstanceManager).Assembly.Location;

    private static readonly Dictionary<string, string> Environment = new()
    {
        ["Launcher__Templates__sleeper__Executable"] = "sleep",
        ["Launcher__Templates__sleeper__Args__0"] = "300",
    };

    private Task<ServiceProcess> StartLauncherAsync() => ServiceProcess.StartAsync(LauncherDll, _data, Environment);

    private static V1.Launcher.LauncherClient Client(ServiceProcess launcher, out GrpcChannel channel)
    {
        channel = GrpcChannel.ForAddress(launcher.GrpcUrl);
        return new V1.Launcher.LauncherClient(channel);
    }

    [Fact]
    public async Task After_a_SIGKILL_the_launcher_re_adopts_running_children_reports_their_exit_and_stops_them()
    {
        Instance a, b;
        await using (var first = await StartLauncherAsync())
        {
            var client = Client(first, out var channel);
            a = await client.LaunchAsync(new LaunchRequest { Template = "sleeper", Workload = "a" });
            b = await client.LaunchAsync(new LaunchRequest { Template = "sleeper", Workload = "b" });
            // An armed successor does not outlive the launcher (the supervisor arms it again when it reconnects).
            await client.ArmSuccessorAsync(new ArmSuccessorRequest { InstanceId = a.Id, Successor = new LaunchRequest { Template = "sleeper", Workload = "a" } });
            channel.Dispose();
            await first.KillAsync();
        }
        var identityA = ProcFs.Identify((int)a.Pid)!.Value;
        var identityB = ProcFs.Identify((int)b.Pid)!.Value;
        _strays.AddRange([identityA, identityB]);
        Assert.True(ProcFs.IsAlive(identityA) && ProcFs.IsAlive(identityB), "children died with the launcher");

        await using var second = await StartLauncherAsync();
        var restarted = Client(second, out var restartedChannel);
        using var _ = restartedChannel;

        var adopted = await restarted.GetInstanceAsync(new GetInstanceRequest { Id = a.Id });
        Assert.Equal((Instance.Types.State.Running, true, a.Pid), (adopted.State, adopted.Adopted, adopted.Pid));
        Assert.False(adopted.SuccessorArmed);
        // It keeps its cgroup (this machine's cgroup v2 hierarchy is writable: the default containment uses it).
        Assert.NotEqual("", a.Cgroup);
        Assert.Equal(a.Cgroup, adopted.Cgroup);
        Assert.Contains(a.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture), File.ReadAllLines(Path.Combine(a.Cgroup, "cgroup.procs")));
        // The output prepared for that successor is removed: only the two instances' directories are left.
        Assert.Equal(new[] { a.Id, b.Id }.Order(), Directory.GetDirectories(Path.Combine(_data, "instances")).Select(Path.GetFileName).Order());

        using var watch = restarted.WatchInstanceEvents(new WatchInstanceEventsRequest { InstanceId = a.Id });
        await watch.ResponseHeadersAsync;
        ProcessTree.Signal(identityA, ProcessTree.SIGKILL); // it dies on its own
        using var cts = new CancellationTokenSource(Timeout);
        Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
        Assert.Equal(InstanceEvent.Types.Type.Exited, watch.ResponseStream.Current.Type);
        Assert.False(watch.ResponseStream.Current.Instance.HasExitCode); // only its real parent could know
        Assert.Equal("", watch.ResponseStream.Current.Instance.SuccessorId);

        var stopped = await restarted.StopInstanceAsync(new StopInstanceRequest { Id = b.Id });
        Assert.Equal(Instance.Types.State.Exited, stopped.State);
        Assert.False(ProcFs.IsAlive(identityB));
        Assert.False(Directory.Exists(b.Cgroup));
    }

    [Fact]
    public async Task A_record_whose_pid_now_belongs_to_another_process_is_not_adopted_and_that_process_is_left_alone()
    {
        Instance x;
        await using (var first = await StartLauncherAsync())
        {
            var client = Client(first, out var channel);
            x = await client.LaunchAsync(new LaunchRequest { Template = "sleeper" });
            channel.Dispose();
            await first.KillAsync();
        }
        // The instance ends while the launcher is down, and its pid goes to a stranger: a process the launcher never
        // started (not in the instance's cgroup, without its environment).
        var own = ProcFs.Identify((int)x.Pid)!.Value;
        ProcessTree.Signal(own, ProcessTree.SIGKILL);
        // (Spawned by this process's reaper: System.Diagnostics.Process cannot share a process with a waitid(P_ALL) reaper.)
        var stranger = ChildReaper.Shared.Spawn(new SpawnRequest("sleep", ["300"], new Dictionary<string, string>())).Identity;
        _strays.Add(stranger);

        // As if the pid had been reused: the record names the stranger's pid, with a start time that is not its own.
        using (var db = new SqliteConnection($"Data Source={Path.Combine(_data, "launcher.db")};Pooling=False"))
        {
            db.Open();
            using var update = db.CreateCommand();
            update.CommandText = "UPDATE instances SET pid = $pid, start_ticks = $start WHERE id = $id";
            update.Parameters.AddWithValue("$id", x.Id);
            update.Parameters.AddWithValue("$pid", stranger.Pid);
            update.Parameters.AddWithValue("$start", (long)stranger.StartTime - 1);
            Assert.Equal(1, update.ExecuteNonQuery());
        }

        await using var second = await StartLauncherAsync();
        var restarted = Client(second, out var channel2);
        using var _ = channel2;

        var record = await restarted.GetInstanceAsync(new GetInstanceRequest { Id = x.Id });
        Assert.Equal(Instance.Types.State.Exited, record.State);
        Assert.False(record.Adopted);
        Assert.Equal(record, await restarted.StopInstanceAsync(new StopInstanceRequest { Id = x.Id }));
        Assert.True(ProcFs.IsAlive(stranger), "the launcher touched a process that is not its own");
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        foreach (var stray in _strays) ProcessTree.Signal(stray, ProcessTree.SIGKILL);
        try { Directory.Delete(_data, recursive: true); } catch (IOException) { }
        return Task.CompletedTask;
    }
}
