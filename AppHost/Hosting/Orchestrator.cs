using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Hosting;

namespace Platform.AppHost.Hosting;

/// <summary>
/// The engine: picks ports, starts resources in dependency order (each once what it waits for is ready), watches
/// their health, restarts those that exit with backoff, and stops every process tree at shutdown.
/// </summary>
public sealed class Orchestrator : IHostedService, IAsyncDisposable
{
    private static readonly TimeSpan ProbeIntervalStarting = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan ProbeIntervalRunning = TimeSpan.FromSeconds(1);

    private readonly AppModel _model;
    private readonly AppHostOptions _options;
    private readonly Action<string> _onFatal;
    private readonly ConsoleReporter _reporter;
    private readonly StateFile _stateFile;
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(2) };
    private readonly CancellationTokenSource _stopping = new();
    private readonly Dictionary<(string Resource, string Endpoint), int> _ports = [];
    private readonly ConcurrentDictionary<string, ResourceSnapshot> _snapshots = new();
    private readonly ConcurrentDictionary<string, ManagedProcess> _processes = new();
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _ready = new();
    private readonly ConcurrentDictionary<string, StreamWriter> _logs = new();
    private readonly List<Task> _loops = [];
    private readonly Stopwatch _sinceStart = new();
    private readonly Lock _changeLock = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _announcedUp;

    public Orchestrator(AppModel model, AppHostOptions options, Action<string> onFatal)
    {
        _model = model;
        _options = options;
        _onFatal = onFatal;
        _reporter = new ConsoleReporter(options.Output, options.Color, model.Resources.Select(r => r.Name));
        _stateFile = new StateFile(Path.Combine(options.StateDirectory, "apphost.json"));
    }

    /// <summary>The first fatal error (a resource that cannot start), or null.</summary>
    public string? Failure { get; private set; }

    public string StateFilePath => _stateFile.Path;

    public IReadOnlyList<ResourceSnapshot> Snapshots => _model.Resources.Select(r => _snapshots[r.Name]).ToList();

    public ResourceSnapshot this[string name] => _snapshots[name];

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _sinceStart.Start();
        Directory.CreateDirectory(_options.StateDirectory);
        Directory.CreateDirectory(Path.Combine(_options.StateDirectory, "logs"));

        foreach (var resource in _model.Resources)
        {
            Directory.CreateDirectory(Path.Combine(_options.StateDirectory, resource.Name));
            foreach (var endpoint in resource.Endpoints) _ports[(resource.Name, endpoint.Name)] = FreeLoopbackPort();
            var endpoints = resource.Endpoints.ToDictionary(e => e.Name, e => ResourceEnvironment.Url(_ports[(resource.Name, e.Name)]));
            var initial = resource.WaitFors.Count > 0 ? ResourceState.Waiting : ResourceState.NotStarted;
            _snapshots[resource.Name] = new ResourceSnapshot(resource.Name, initial, ResourceHealth.Unknown, null, 0, null, endpoints, null);
            _ready[resource.Name] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _logs[resource.Name] = new StreamWriter(Path.Combine(_options.StateDirectory, "logs", resource.Name + ".log"), append: false) { AutoFlush = true };
        }

        _reporter.Info($"starting {_model.Resources.Count} resources; state in {_options.StateDirectory}");
        WriteState();
        foreach (var resource in _model.StartOrder) _loops.Add(Task.Run(() => RunResourceAsync(resource, _stopping.Token)));
        return Task.CompletedTask;
    }

    /// <summary>Stops every resource, dependents before what they depend on, each tree with its grace.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stopping.IsCancellationRequested) return;
        _reporter.Info("stopping");
        await _stopping.CancelAsync();

        foreach (var resource in _model.StartOrder.Reverse())
        {
            if (!_processes.TryGetValue(resource.Name, out var process) || process.Exited.IsCompleted) continue;
            Update(resource.Name, s => s with { State = ResourceState.Stopping });
            var killed = await process.StopAsync(resource.StopGrace);
            if (killed > 0) _reporter.Info($"{resource.Name}: killed {killed} process(es) still running after {resource.StopGrace.TotalSeconds:0.#} s");
            var code = ManagedProcess.ToExitCode(await process.Exited);
            Update(resource.Name, s => s with { State = ResourceState.Finished, ExitCode = code, Health = ResourceHealth.Unknown, Pid = null });
        }

        await Task.WhenAll(_loops).WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Default);
        if (_options.StopAdoptedOrphans) await StopAdoptedOrphansAsync();
        foreach (var name in _snapshots.Keys)
        {
            Update(name, s => s.State is ResourceState.Finished or ResourceState.FailedToStart or ResourceState.Exited
                ? s : s with { State = ResourceState.Finished, Pid = null, Health = ResourceHealth.Unknown });
        }
        _reporter.Info("stopped");
    }

    /// <summary>
    /// The AppHost is a child subreaper: whatever a resource left behind when it died (a launcher's agents after the
    /// launcher was SIGKILLed and restarted, a double-forked daemon) became the AppHost's own child. With every
    /// resource stopped, those are the only children left: stop their trees too, so nothing of the platform stays.
    /// </summary>
    private async Task StopAdoptedOrphansAsync()
    {
        var self = Environment.ProcessId;
        var orphans = Platform.ProcessControl.ProcFs.All().Values
            .Where(p => p.ParentPid == self)
            .Select(p => new Platform.ProcessControl.ProcessIdentity(p.Pid, p.StartTime))
            .ToList();
        if (orphans.Count == 0) return;
        var results = await Task.WhenAll(orphans.Select(o => Platform.ProcessControl.ProcessTree.StopAsync(o, TimeSpan.FromSeconds(5))));
        _reporter.Info($"stopped {orphans.Count} process tree(s) left behind by resources ({results.Sum(r => r.Killed)} killed after the grace)");
    }

    /// <summary>Waits until the snapshots satisfy <paramref name="condition"/> (tests and tools).</summary>
    public async Task WaitForAsync(Func<Orchestrator, bool> condition, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task changed;
            lock (_changeLock) changed = _changed.Task;
            if (condition(this)) return;
            await changed.WaitAsync(cancellationToken);
        }
    }

    private async Task RunResourceAsync(Resource resource, CancellationToken stopping)
    {
        var name = resource.Name;
        try
        {
            if (resource.WaitFors.Count > 0)
            {
                _reporter.Info($"{name}: waiting for {string.Join(", ", resource.WaitFors)}");
                await Task.WhenAll(resource.WaitFors.Select(d => _ready[d].Task)).WaitAsync(stopping);
            }

            var restarts = new Platform.Restarts.RestartTracker(_options.Restarts, TimeProvider.System);
            var failedStarts = 0;
            var everReady = false;
            while (!stopping.IsCancellationRequested)
            {
                var instanceId = Guid.NewGuid().ToString("N")[..12];
                Update(name, s => s with { State = ResourceState.Starting, Health = ResourceHealth.Unknown, InstanceId = instanceId, ExitCode = null });

                ManagedProcess process;
                try
                {
                    var launch = resource.ResolveLaunch();
                    var env = ResourceEnvironment.Build(resource, _model, _ports, _options.StateDirectory, instanceId, Environment.ProcessId);
                    process = ManagedProcess.Start(launch, env, (line, isError) => Output(name, line, isError));
                }
                catch (ResourceLaunchException e)
                {
                    Update(name, s => s with { State = ResourceState.FailedToStart });
                    Fatal($"{name} failed to start: {e.Message}");
                    return;
                }

                _processes[name] = process;
                restarts.Started();
                Update(name, s => s with { State = ResourceState.Running, Pid = process.Pid });
                _reporter.Info($"{name}: started (pid {process.Pid})");

                using var run = CancellationTokenSource.CreateLinkedTokenSource(stopping);
                var health = MonitorHealthAsync(resource, run.Token);
                try
                {
                    await process.Exited.WaitAsync(stopping);
                }
                catch (OperationCanceledException)
                {
                    return; // StopAsync stops the process.
                }
                finally
                {
                    await run.CancelAsync();
                }

                everReady |= await health;
                var exit = await process.Exited;
                var code = ManagedProcess.ToExitCode(exit);
                var ranFor = DateTimeOffset.UtcNow - process.StartedAt;
                if (stopping.IsCancellationRequested) return;

                Update(name, s => s with { State = ResourceState.Exited, ExitCode = code, Pid = null, Health = ResourceHealth.Unknown });
                if (!everReady && ++failedStarts >= _options.MaxFailedStarts)
                {
                    Fatal($"{name} exited {failedStarts} times without becoming healthy (last exit code {code}); see {Path.Combine(_options.StateDirectory, "logs", name + ".log")}");
                    return;
                }

                restarts.Exited(failed: true); // any exit the AppHost did not ask for is a failure
                var delay = restarts.NextStartAt is { } next ? next - DateTimeOffset.UtcNow : TimeSpan.Zero;
                if (delay < TimeSpan.Zero) delay = TimeSpan.Zero;
                _reporter.Info($"{name}: exited unexpectedly with {DescribeExit(exit)} after {ranFor.TotalSeconds:0.0} s; restarting in {delay.TotalSeconds:0.#} s");
                await Task.Delay(delay, stopping);
                Update(name, s => s with { Restarts = s.Restarts + 1 });
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    /// <summary>Probes health while the process runs; returns whether it was ever ready.</summary>
    private async Task<bool> MonitorHealthAsync(Resource resource, CancellationToken cancellationToken)
    {
        var everReady = false;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                var health = await ProbeAsync(resource, cancellationToken);
                if (cancellationToken.IsCancellationRequested) break;
                var previous = _snapshots[resource.Name].Health;
                if (health != previous)
                {
                    Update(resource.Name, s => s with { Health = health });
                    _reporter.Info($"{resource.Name}: {health}");
                }

                if (_snapshots[resource.Name].IsReady)
                {
                    everReady = true;
                    _ready[resource.Name].TrySetResult();
                    AnnounceWhenAllUp();
                }

                await Task.Delay(health == ResourceHealth.Healthy ? ProbeIntervalRunning : ProbeIntervalStarting, cancellationToken);
            }
        }
        catch (OperationCanceledException)
        {
        }
        return everReady;
    }

    private async Task<ResourceHealth> ProbeAsync(Resource resource, CancellationToken cancellationToken)
    {
        try
        {
            if (resource.HealthCheck is { } check)
                return await check(cancellationToken) ? ResourceHealth.Healthy : ResourceHealth.Unhealthy;
            if (resource.HealthPath is null || !_ports.TryGetValue((resource.Name, "http"), out var port))
                return ResourceHealth.Healthy;

            using var response = await _http.GetAsync(ResourceEnvironment.Url(port) + resource.HealthPath, cancellationToken);
            if (!response.IsSuccessStatusCode) return ResourceHealth.Unhealthy;
            var body = await response.Content.ReadAsStringAsync(cancellationToken);
            return ReadHealthStatus(body);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return ResourceHealth.Unknown; // Not listening yet, or not answering: the observer cannot tell.
        }
    }

    /// <summary>Reads "status" from a ServiceDefaults health report; a bare 200 is Healthy.</summary>
    internal static ResourceHealth ReadHealthStatus(string body)
    {
        try
        {
            using var json = JsonDocument.Parse(body);
            if (json.RootElement.ValueKind == JsonValueKind.Object &&
                json.RootElement.TryGetProperty("status", out var status) &&
                Enum.TryParse<ResourceHealth>(status.GetString(), out var health))
                return health;
        }
        catch (JsonException)
        {
        }
        return ResourceHealth.Healthy;
    }

    private void AnnounceWhenAllUp()
    {
        if (Volatile.Read(ref _announcedUp) == 1 || !_snapshots.Values.All(s => s.IsReady)) return;
        if (Interlocked.Exchange(ref _announcedUp, 1) == 1) return;
        _reporter.Info($"all {_snapshots.Count} resources are up in {_sinceStart.Elapsed.TotalSeconds:0.00} s:");
        _reporter.Table(Snapshots);
    }

    private void Output(string resource, string line, bool isError)
    {
        _reporter.ResourceLine(resource, line, isError);
        if (_logs.TryGetValue(resource, out var log))
        {
            lock (log) log.WriteLine(line);
        }
    }

    private void Update(string name, Func<ResourceSnapshot, ResourceSnapshot> change)
    {
        lock (_changeLock)
        {
            _snapshots[name] = change(_snapshots[name]);
            _stateFile.Write(Environment.ProcessId, Snapshots);
            NotifyChanged();
        }
    }

    /// <summary>Wakes <see cref="WaitForAsync"/>; called under <see cref="_changeLock"/>.</summary>
    private void NotifyChanged()
    {
        var changed = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        changed.TrySetResult();
    }

    private void WriteState()
    {
        lock (_changeLock) _stateFile.Write(Environment.ProcessId, Snapshots);
    }

    private void Fatal(string message)
    {
        lock (_changeLock)
        {
            if (Failure is not null) return;
            Failure = message;
            NotifyChanged();
        }
        _reporter.Error(message);
        _onFatal(message);
    }

    internal static string DescribeExit(Platform.ProcessControl.ExitStatus exit) =>
        exit.Signal is { } signal ? $"signal {signal}" : exit.ToString();

    private static int FreeLoopbackPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None);
        foreach (var (name, process) in _processes)
        {
            if (!process.Exited.IsCompleted) await process.StopAsync(_model[name].StopGrace);
        }
        foreach (var log in _logs.Values) await log.DisposeAsync();
        _http.Dispose();
        _stopping.Dispose();
    }
}
