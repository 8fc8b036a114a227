using System.Diagnostics;
using System.Globalization;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Health.V1;
using Platform.Launcher.V1;
using Platform.Monitor.V1;
using Platform.Registry.V1;
using Platform.Supervisor.V1;
using Duration = Google.Protobuf.WellKnownTypes.Duration;

namespace Platform.Testing.Chaos;

/// <summary>How hard and how long <see cref="ChaosRun"/> pushes.</summary>
public sealed record ChaosOptions
{
    /// <summary>Sessions registered before the first fault (more are registered while faults happen).</summary>
    public int Sessions { get; init; } = 200;

    /// <summary>Workloads that run until stopped; they must never be restarted, whatever service is killed.</summary>
    public int SteadyWorkloads { get; init; } = 10;

    /// <summary>Workloads that exit 1 after a few seconds, over and over, and are restarted at once.</summary>
    public int CrashingWorkloads { get; init; } = 10;

    /// <summary>Each service is SIGKILLed this many times, in turn: registry, launcher, monitor, supervisor.</summary>
    public int Rounds { get; init; } = 2;

    /// <summary>Load between one service being back and the next kill.</summary>
    public TimeSpan Between { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Steady load after the faults, measured at its start and end.</summary>
    public TimeSpan Soak { get; init; } = TimeSpan.FromSeconds(60);

    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(90);
}

/// <summary>RSS, open file descriptors and threads of one process, from /proc.</summary>
/// <summary>A process's resident size, descriptors and threads; <see cref="Threads"/> leaves out the thread pool's
/// workers (named ".NET TP Worker"), which come and go with the load and the machine's contention, and are counted
/// in <see cref="PoolThreads"/>: a thread started and never ended shows in <see cref="Threads"/>.</summary>
public sealed record ProcessFigures(double RssMiB, int Fds, int Threads, int PoolThreads = 0)
{
    public static ProcessFigures? Of(int pid)
    {
        try
        {
            var status = File.ReadAllLines($"/proc/{pid}/status");
            var pool = 0;
            foreach (var task in Directory.GetDirectories($"/proc/{pid}/task"))
            {
                try
                {
                    if (File.ReadAllText(Path.Combine(task, "comm")).StartsWith(".NET TP Worker", StringComparison.Ordinal)) pool++;
                }
                catch (IOException)
                {
                    // the thread ended meanwhile
                }
            }
            var threads = (int)Field(status, "Threads");
            return new ProcessFigures(Field(status, "VmRSS") / 1024.0, Directory.GetFileSystemEntries($"/proc/{pid}/fd").Length, Math.Max(0, threads - pool), pool);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>Resident set size in MiB (VmRSS); throws when the process is gone.</summary>
    public static double Rss(int pid) => Field(File.ReadAllLines($"/proc/{pid}/status"), "VmRSS") / 1024.0;

    /// <summary>The number of a /proc/PID/status line ("VmRSS:   1234 kB" gives 1234).</summary>
    private static long Field(string[] status, string name) =>
        long.Parse(status.Single(l => l.StartsWith(name + ":", StringComparison.Ordinal))
            .Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    public override string ToString() => $"{RssMiB:0.0} MiB, {Fds} fds, {Threads} threads + {PoolThreads} pool";
}

/// <summary>What a chaos run found. Every list of faults is empty when nothing was lost, doubled or left behind.</summary>
public sealed record ChaosReport
{
    /// <summary>SIGKILLs per service, and how long each took to serve again (ms).</summary>
    public Dictionary<string, List<double>> Kills { get; } = [];

    public int SessionsAcknowledged { get; set; }

    /// <summary>Acknowledged sessions missing, not active, or reported unknown/expired by a renewal.</summary>
    public List<string> SessionsLost { get; } = [];

    public int WorkloadsAcknowledged { get; set; }

    /// <summary>Acknowledged workloads missing or not running at the end.</summary>
    public List<string> WorkloadsLost { get; } = [];

    /// <summary>Samples in which a workload had two live instances.</summary>
    public List<string> Doubled { get; } = [];

    /// <summary>Steady workloads whose process was restarted or missing (they must run through every fault).</summary>
    public List<string> Interrupted { get; } = [];

    public int Samples { get; set; }

    /// <summary>Processes of the workloads left after their deletion and the AppHost's stop.</summary>
    public List<string> Orphans { get; } = [];

    /// <summary>Per watcher: streams opened, events, and the gaps and duplicates it saw.</summary>
    public List<(string Name, int Connections, long Events, IReadOnlyList<string> Faults)> Watchers { get; } = [];

    /// <summary>Per service (and "workload processes": their count as Threads): figures at the soak's start and end.</summary>
    /// <summary>Figures at the soak's start, a third of the way in (settled) and at its end.</summary>
    public List<(string Name, ProcessFigures Start, ProcessFigures Settled, ProcessFigures End)> Soak { get; } = [];

    /// <summary>From the settled figures to the end.</summary>
    public TimeSpan SoakSettledFor { get; set; }

    public TimeSpan SoakDuration { get; set; }

    /// <summary>Everything that went wrong, one line each; empty when the run lost, doubled and left nothing.</summary>
    public IEnumerable<string> Failures =>
        SessionsLost.Select(s => "session lost: " + s)
            .Concat(WorkloadsLost.Select(w => "workload lost: " + w))
            .Concat(Doubled.Select(d => "two instances: " + d))
            .Concat(Interrupted.Select(i => "steady workload interrupted: " + i))
            .Concat(Orphans.Select(o => "orphan: " + o))
            .Concat(Watchers.SelectMany(w => w.Faults));
}

/// <summary>
/// The whole platform under load while each service is SIGKILLed in turn (the AppHost's restart policy brings it
/// back): sessions registered and renewed, steady and crashing supervised workloads, a resuming watcher on every
/// stream, /proc sampled throughout; then a soak under the same load; then everything deleted and the AppHost
/// stopped. The report says what was lost, doubled, interrupted or left behind (nothing, when the platform is right).
/// </summary>
public sealed class ChaosRun(AppHostProcess host, ChaosOptions options, Action<string> log)
{
    public static readonly string[] Services = ["registry", "launcher", "monitor", "supervisor"];
    private const string Prefix = "chaos-";
    /// <summary>In the environment of every workload of a run (its value the run's id): how /proc tells them apart.</summary>
    private const string RunVariable = "PLATFORM_CHAOS_RUN";
    private readonly ChaosReport _report = new();
    private readonly HashSet<string> _sessions = [];
    private readonly HashSet<string> _workloads = [];
    private readonly string _run = Guid.NewGuid().ToString("N")[..8];

    private static bool IsSteady(string workload) => !workload.StartsWith(Prefix + "crash-", StringComparison.Ordinal);

    public async Task<ChaosReport> RunAsync()
    {
        await using var sampler = new InstanceSampler(RunVariable, _run, IsSteady, TimeSpan.FromMilliseconds(100));
        try
        {
            await RunAsync(sampler);
        }
        finally
        {
            // Whatever happened, nothing of this run outlives it (an aborted run would leave its agents, which outlive
            // the platform's own processes by design, to the next).
            foreach (var (_, processes) in sampler.Scan())
                foreach (var p in processes) AppHostProcess.Signal(p.Pid, AppHostProcess.SIGKILL);
        }
        return _report;
    }

    private async Task RunAsync(InstanceSampler sampler)
    {
        var state = await host.WaitForAllServingAsync(options.Timeout);
        using var registryChannel = state.Channel("registry");
        using var launcherChannel = state.Channel("launcher");
        using var monitorChannel = state.Channel("monitor");
        using var supervisorChannel = state.Channel("supervisor");
        var registry = new SessionRegistry.SessionRegistryClient(registryChannel);
        var launcher = new Launcher.V1.Launcher.LauncherClient(launcherChannel);
        var supervisor = new Supervisor.V1.Supervisor.SupervisorClient(supervisorChannel);
        sampler.Start();
        var revision = (await registry.ListSessionsAsync(new ListSessionsRequest { PageSize = 1 })).Revision;
        var sessionWatcher = new SessionWatcher(registry, revision);
        var workloadWatcher = new WorkloadWatcher(supervisor);
        var instanceWatcher = new InstanceWatcher(launcher);
        var statusWatcher = new StatusWatcher(new AgentMonitor.AgentMonitorClient(monitorChannel));
        ResumingWatcher[] watchers = [sessionWatcher, workloadWatcher, instanceWatcher, statusWatcher];
        foreach (var w in watchers) w.Start();
        await sessionWatcher.Subscribed.WaitAsync(TimeSpan.FromSeconds(30)); // before the load: it sees every change

        using var stopLoad = new CancellationTokenSource();
        var keeper = Task.Run(() => KeepAliveAsync(registry, stopLoad.Token));

        // The load before the first fault.
        var clock = Stopwatch.StartNew();
        await Parallel.ForEachAsync(Enumerable.Range(0, options.Sessions), new ParallelOptions { MaxDegreeOfParallelism = 16 },
            async (i, _) => await RegisterAsync(registry, $"s{i}", CancellationToken.None));
        for (var i = 0; i < options.SteadyWorkloads; i++) await ApplyAsync(supervisor, Steady($"{Prefix}steady-{i:00}"), CancellationToken.None);
        for (var i = 0; i < options.CrashingWorkloads; i++) await ApplyAsync(supervisor, Crashing($"{Prefix}crash-{i:00}", 2 + i % 4), CancellationToken.None);
        await WaitSteadyRunningAsync(supervisor);
        log($"load up in {clock.Elapsed.TotalSeconds:0.0}s: {_sessions.Count} sessions, {_workloads.Count} workloads");
        await Task.Delay(options.Between);

        // Faults, with more sessions and workloads acknowledged while they happen.
        using var stopLate = new CancellationTokenSource();
        var late = Task.WhenAll(
            Task.Run(() => RegisterLateAsync(registry, stopLate.Token)),
            Task.Run(() => ApplyLateAsync(supervisor, stopLate.Token)));
        for (var round = 1; round <= options.Rounds; round++)
        {
            foreach (var service in Services)
            {
                var took = await KillAsync(service);
                if (!_report.Kills.TryGetValue(service, out var list)) _report.Kills[service] = list = [];
                list.Add(took.TotalMilliseconds);
                log($"{DateTime.UtcNow:HH:mm:ss.fff} round {round}: {service} SIGKILLed, serving again after {took.TotalMilliseconds:0} ms");
                await Task.Delay(options.Between);
            }
        }
        await stopLate.CancelAsync();
        await late;
        await host.WaitForAllServingAsync(options.Timeout);
        await WaitSteadyRunningAsync(supervisor);

        // The soak: the same load, no faults, figures at both ends.
        state = host.ReadState()!;
        // A third of the way in, the services have warmed up (methods compiled at their last tier, buffers and
        // histories grown to their working size): what grows after that is what would keep growing.
        var start = Figures(state, sampler);
        var soak = Stopwatch.StartNew();
        await Task.Delay(options.Soak / 3);
        var settled = Figures(host.ReadState()!, sampler);
        var settledAt = soak.Elapsed;
        await Task.Delay(options.Soak - options.Soak / 3);
        _report.SoakDuration = soak.Elapsed;
        _report.SoakSettledFor = soak.Elapsed - settledAt;
        var end = Figures(host.ReadState()!, sampler);
        foreach (var (name, figures) in start)
            if (end.TryGetValue(name, out var last) && settled.TryGetValue(name, out var middle)) _report.Soak.Add((name, figures, middle, last));

        // What must hold.
        await CheckSessionsAsync(registry);
        await CheckWorkloadsAsync(supervisor);
        await ConvergeAsync(() => Task.FromResult(sessionWatcher.LastRevision), async () => (await registry.ListSessionsAsync(new ListSessionsRequest { PageSize = 1 })).Revision,
            (seen, now) => seen >= now ? null : $"revision {seen} seen, the registry at {now}", sessionWatcher);
        await ConvergeAsync(() => Task.FromResult(workloadWatcher.Known), async () => (await supervisor.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000 })).Workloads.ToDictionary(w => w.Name, w => w.Revision),
            (seen, now) => Behind(now.Where(w => seen.GetValueOrDefault(w.Key) < w.Value).Select(w => $"{w.Key} at {seen.GetValueOrDefault(w.Key)}, stored {w.Value}")), workloadWatcher);
        await ConvergeAsync(() => Task.FromResult(instanceWatcher.Running), async () => await InstanceWatcher.RunningAsync(launcher),
            (seen, now) => Behind(seen.Except(now).Select(id => $"{id} not running").Concat(now.Except(seen).Select(id => $"{id} running, not seen"))), instanceWatcher);
        if (statusWatcher.CurrentStream == 0)
            _report.Watchers.Add((statusWatcher.Name + " (resumed)", 0, 0, [$"{statusWatcher.Name}: its last stream did not bring the current statuses"]));

        await sampler.StopAsync();
        _report.Samples = sampler.Samples;
        _report.Doubled.AddRange(sampler.Doubles);
        _report.Interrupted.AddRange(sampler.SteadyInterruptions);
        foreach (var w in watchers)
        {
            await w.DisposeAsync();
            _report.Watchers.Add((w.Name, w.Connections, w.Events, w.Faults));
        }
        await stopLoad.CancelAsync();
        await keeper;

        // Everything deleted, then the AppHost stopped: nothing of the workloads may be left.
        var before = (await supervisor.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000 })).Workloads.ToDictionary(w => w.Name);
        // Every workload of the run, not only the acknowledged ones: an apply cancelled in flight when the faults ended
        // may have been stored all the same.
        foreach (var name in before.Keys.Where(n => n.StartsWith(Prefix, StringComparison.Ordinal)))
            await supervisor.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = name });
        await WaitAsync(() => sampler.Scan().Count == 0, TimeSpan.FromSeconds(30));
        foreach (var (workload, processes) in sampler.Scan())
        {
            foreach (var p in processes)
            {
                // What the supervisor had for the workload and what the launcher says of the orphan's instance.
                var had = before.TryGetValue(workload, out var w) ? $"{w.Status.Phase} generation {w.Status.Generation} instance {w.Status.InstanceId}" : "nothing";
                string launcherSays;
                try
                {
                    var instance = await launcher.GetInstanceAsync(new GetInstanceRequest { Id = p.Instance });
                    launcherSays = $"{instance.State}, pid {instance.Pid}, labels {instance.Labels}, adopted {instance.Adopted}";
                }
                catch (RpcException e)
                {
                    launcherSays = e.Status.Detail;
                }
                _report.Orphans.Add($"{p.Pid} of {workload} ({p.Instance}) after its deletion; the supervisor had {had}; the launcher: {launcherSays}");
            }
        }
        var exit = await host.TerminateAsync(options.Timeout);
        if (exit != 0) _report.Orphans.Add($"the AppHost exited {exit} at its stop");
        await WaitAsync(() => AppHostProcess.PlatformProcesses(host.StateDirectory).Count == 0, TimeSpan.FromSeconds(30));
        _report.Orphans.AddRange(AppHostProcess.PlatformProcesses(host.StateDirectory).Select(pid => $"{pid} after the AppHost's stop"));
    }

    private static Dictionary<string, ProcessFigures> Figures(AppHostState state, InstanceSampler sampler)
    {
        var figures = new Dictionary<string, ProcessFigures>();
        foreach (var r in state.Resources)
            if (r.Pid is { } pid && ProcessFigures.Of(pid) is { } f) figures[r.Name] = f;
        figures["workload processes"] = new ProcessFigures(0, 0, sampler.Scan().Sum(w => w.Value.Count));
        return figures;
    }

    /// <summary>SIGKILLs a service and waits until the AppHost has restarted it and it serves again.</summary>
    private async Task<TimeSpan> KillAsync(string service)
    {
        var before = host.ReadState()![service];
        var clock = Stopwatch.StartNew();
        AppHostProcess.Signal(before.Pid!.Value, AppHostProcess.SIGKILL);
        var after = await host.WaitForStateAsync(s => s[service].Restarts > before.Restarts && s[service].IsUp && s[service].Pid != before.Pid, options.Timeout);
        await WaitAsync(async () => await AppHostProcess.CheckHealthAsync(after[service].GrpcUrl) == HealthCheckResponse.Types.ServingStatus.Serving, options.Timeout);
        return clock.Elapsed;
    }

    private async Task RegisterAsync(SessionRegistry.SessionRegistryClient registry, string key, CancellationToken cancel)
    {
        var request = new RegisterSessionRequest
        {
            Workload = "chaos-sessions",
            Instance = $"{_run}-{key}",
            Node = "chaos",
            Ttl = Duration.FromTimeSpan(TimeSpan.FromSeconds(60)),
            RequestId = $"{_run}-{key}",
            Labels = { ["chaos"] = _run },
        };
        // Retried with the same request id until answered: the answer, not the attempt, is the acknowledgement.
        while (true)
        {
            cancel.ThrowIfCancellationRequested();
            try
            {
                var session = await registry.RegisterSessionAsync(request, deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: cancel);
                lock (_sessions) _sessions.Add(session.Id);
                return;
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Internal or StatusCode.Unknown && !cancel.IsCancellationRequested)
            {
                await Task.Delay(100, CancellationToken.None);
            }
        }
    }

    private async Task RegisterLateAsync(SessionRegistry.SessionRegistryClient registry, CancellationToken cancel)
    {
        try
        {
            for (var i = 0; ; i++)
            {
                await RegisterAsync(registry, $"late{i}", cancel);
                await Task.Delay(200, cancel);
            }
        }
        catch (OperationCanceledException) { }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled) { }
    }

    private async Task ApplyLateAsync(Supervisor.V1.Supervisor.SupervisorClient supervisor, CancellationToken cancel)
    {
        try
        {
            for (var i = 0; ; i++)
            {
                var attempts = await ApplyAsync(supervisor, Steady($"{Prefix}late-{i:00}"), cancel);
                if (attempts > 1) log($"{DateTime.UtcNow:HH:mm:ss.fff} {Prefix}late-{i:00} acknowledged at attempt {attempts}");
                await Task.Delay(3000, cancel);
            }
        }
        catch (OperationCanceledException) { }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled) { }
    }

    /// <summary>Renews every acknowledged session every 2 s over one KeepAlive stream, reconnecting through outages; a
    /// session reported unknown or expired is a lost one.</summary>
    private async Task KeepAliveAsync(SessionRegistry.SessionRegistryClient registry, CancellationToken cancel)
    {
        while (!cancel.IsCancellationRequested)
        {
            try
            {
                using var call = registry.KeepAlive(cancellationToken: cancel);
                while (!cancel.IsCancellationRequested)
                {
                    string[] ids;
                    lock (_sessions) ids = [.. _sessions];
                    foreach (var chunk in ids.Chunk(500))
                    {
                        await call.RequestStream.WriteAsync(new KeepAliveRequest { Ids = { chunk } }, cancel);
                        if (!await call.ResponseStream.MoveNext(cancel)) throw new RpcException(new Status(StatusCode.Unavailable, "keep-alive stream ended"));
                        var reply = call.ResponseStream.Current;
                        lock (_report)
                            _report.SessionsLost.AddRange(reply.UnknownIds.Select(id => $"{id} unknown to a renewal").Concat(reply.ExpiredIds.Select(id => $"{id} expired")));
                    }
                    await Task.Delay(2000, cancel);
                }
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is RpcException { StatusCode: StatusCode.Unavailable or StatusCode.Cancelled or StatusCode.Internal or StatusCode.Unknown }
                or IOException) // the registry went away under a write: reconnect
            {
                try { await Task.Delay(100, cancel); }
                catch (OperationCanceledException) { return; }
            }
        }
    }

    private Workload Steady(string name) => new()
    {
        Name = name,
        Launch = new LaunchSpec { Process = new ProcessSpec { Executable = "sleep", Args = { "100000" } }, Env = { [RunVariable] = _run } },
        RestartPolicy = new Supervisor.V1.RestartPolicy { InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)) },
        Health = new HealthPolicy { Probe = new Target { Interval = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)), Process = new ProcessProbe() } },
        StopGrace = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
    };

    private Workload Crashing(string name, int seconds) => new()
    {
        Name = name,
        Launch = new LaunchSpec { Process = new ProcessSpec { Executable = "sh", Args = { "-c", $"sleep {seconds}; exit 1" } }, Env = { [RunVariable] = _run } },
        RestartPolicy = new Supervisor.V1.RestartPolicy
        {
            InitialBackoff = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)),
            MaxBackoff = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(500)),
            MaxRestarts = 100_000,
            StableAfter = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
        },
        StopGrace = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
    };

    /// <summary>Applies until acknowledged; the attempts it took.</summary>
    private async Task<int> ApplyAsync(Supervisor.V1.Supervisor.SupervisorClient supervisor, Workload workload, CancellationToken cancel)
    {
        var request = new ApplyWorkloadRequest { Workload = workload, RequestId = $"{_run}-{workload.Name}" };
        for (var attempt = 1; ; attempt++)
        {
            cancel.ThrowIfCancellationRequested();
            try
            {
                await supervisor.ApplyWorkloadAsync(request, deadline: DateTime.UtcNow.AddSeconds(10), cancellationToken: cancel);
                lock (_workloads) _workloads.Add(workload.Name);
                return attempt;
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Internal or StatusCode.Unknown && !cancel.IsCancellationRequested)
            {
                await Task.Delay(100, CancellationToken.None);
            }
        }
    }

    private async Task WaitSteadyRunningAsync(Supervisor.V1.Supervisor.SupervisorClient supervisor)
    {
        string[] expected;
        lock (_workloads) expected = [.. _workloads.Where(IsSteady)];
        await Eventually.ValueAsync(async () =>
        {
            var listed = (await supervisor.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000 })).Workloads.ToDictionary(w => w.Name);
            return expected.Where(n => !listed.TryGetValue(n, out var w) || w.Status.Phase != WorkloadStatus.Types.Phase.Running).ToList();
        }, notRunning => notRunning.Count == 0, options.Timeout, "every steady workload to be RUNNING");
    }

    private async Task CheckSessionsAsync(SessionRegistry.SessionRegistryClient registry)
    {
        var active = new HashSet<string>();
        var token = "";
        do
        {
            var page = await registry.ListSessionsAsync(new ListSessionsRequest { LabelSelector = $"chaos={_run}", PageSize = 1000, PageToken = token });
            active.UnionWith(page.Sessions.Where(s => s.State == Session.Types.State.Active).Select(s => s.Id));
            token = page.NextPageToken;
        }
        while (token.Length > 0);
        lock (_sessions)
        lock (_report)
        {
            _report.SessionsAcknowledged = _sessions.Count;
            _report.SessionsLost.AddRange(_sessions.Where(id => !active.Contains(id)).Select(id => $"{id} not an active session at the end"));
        }
    }

    private async Task CheckWorkloadsAsync(Supervisor.V1.Supervisor.SupervisorClient supervisor)
    {
        var listed = (await supervisor.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000 })).Workloads.ToDictionary(w => w.Name);
        lock (_workloads)
        {
            _report.WorkloadsAcknowledged = _workloads.Count;
            foreach (var name in _workloads)
            {
                if (!listed.TryGetValue(name, out var w)) _report.WorkloadsLost.Add($"{name} is not stored");
                else if (IsSteady(name) && w.Status.Phase != WorkloadStatus.Types.Phase.Running) _report.WorkloadsLost.Add($"{name} is {w.Status.Phase}: {w.Status.Message}");
            }
        }
    }

    /// <summary>Waits (under the constant churn of the crashing workloads) for a moment when what a watcher believes
    /// agrees with what the service says (<paramref name="disagreement"/> null); a watcher that never agrees missed
    /// something: a gap.</summary>
    private async Task ConvergeAsync<T>(Func<Task<T>> seen, Func<Task<T>> now, Func<T, T, string?> disagreement, ResumingWatcher watcher)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        string? last = null;
        while (DateTime.UtcNow < deadline)
        {
            var truth = await now();
            await Task.Delay(300);
            last = disagreement(await seen(), truth);
            if (last is null) return;
        }
        _report.Watchers.Add((watcher.Name + " (agreement)", 0, 0, [$"{watcher.Name}: never agreed with the service in 20 s (last: {last})"]));
    }

    private static string? Behind(IEnumerable<string> differences)
    {
        var list = differences.ToList();
        return list.Count == 0 ? null : string.Join("; ", list.Take(5)) + (list.Count > 5 ? $"; and {list.Count - 5} more" : "");
    }

    private static async Task WaitAsync(Func<bool> condition, TimeSpan timeout) => await WaitAsync(() => Task.FromResult(condition()), timeout);

    private static async Task WaitAsync(Func<Task<bool>> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition() && DateTime.UtcNow < deadline) await Task.Delay(100);
    }
}
