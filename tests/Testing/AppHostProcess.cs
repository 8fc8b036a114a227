using System.Collections;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Platform.ProcessControl;

namespace Platform.Testing;

/// <summary>One resource as apphost.json reports it.</summary>
public sealed record ResourceInfo(string Name, string State, string Health, int? Pid, int Restarts, IReadOnlyDictionary<string, string> Endpoints)
{
    public bool IsUp => State == "Running" && Health is "Healthy";

    public string GrpcUrl => Endpoints["grpc"];

    public string HttpUrl => Endpoints["http"];
}

/// <summary>apphost.json.</summary>
public sealed record AppHostState(int Pid, IReadOnlyList<ResourceInfo> Resources, string? Dashboard = null, int? DashboardPid = null, string Token = "")
{
    /// <summary>A channel to a resource's gRPC endpoint that carries the run's bearer token.</summary>
    public Grpc.Net.Client.GrpcChannel Channel(string resource) => PlatformChannel.Create(this[resource].GrpcUrl, Token);

    public ResourceInfo this[string name] => Resources.Single(r => r.Name == name);

    /// <summary>The apphost.json of a state directory; throws when there is none.</summary>
    public static AppHostState Read(string stateDirectory) =>
        TryRead(stateDirectory) ?? throw new FileNotFoundException("no apphost.json", Path.Combine(stateDirectory, "apphost.json"));

    /// <summary>The apphost.json of a state directory; null while it does not exist.</summary>
    public static AppHostState? TryRead(string stateDirectory)
    {
        string text;
        try { text = File.ReadAllText(Path.Combine(stateDirectory, "apphost.json")); }
        catch (FileNotFoundException) { return null; }
        using var json = JsonDocument.Parse(text);
        var root = json.RootElement;
        var resources = root.GetProperty("resources").EnumerateArray().Select(r => new ResourceInfo(
            r.GetProperty("name").GetString()!,
            r.GetProperty("state").GetString()!,
            r.GetProperty("health").GetString()!,
            r.GetProperty("pid").ValueKind == JsonValueKind.Number ? r.GetProperty("pid").GetInt32() : null,
            r.GetProperty("restarts").GetInt32(),
            r.GetProperty("endpoints").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!))).ToList();
        return new AppHostState(root.GetProperty("pid").GetInt32(), resources,
            root.TryGetProperty("dashboard", out var dashboard) ? dashboard.GetString() : null,
            root.TryGetProperty("dashboardPid", out var dashboardPid) && dashboardPid.ValueKind == JsonValueKind.Number ? dashboardPid.GetInt32() : null,
            root.TryGetProperty("token", out var token) ? token.GetString() ?? "" : "");
    }

    public bool AllUp => Resources.Count > 0 && Resources.All(r => r.IsUp);
}

/// <summary>
/// The real AppHost, started as a process (as `dotnet run --project AppHost` would, minus the build), with its own
/// state directory. Disposing it kills whatever is left of it. Tests that need no process boundary use
/// Aspire.Hosting.Testing instead.
/// </summary>
public sealed partial class AppHostProcess : IAsyncDisposable
{
    private readonly StringBuilder _output = new();
    private SpawnedProcess _process = null!;

    private AppHostProcess(string stateDirectory)
    {
        StateDirectory = stateDirectory;
    }

    public string StateDirectory { get; }

    public int Pid => _process.Pid;

    public bool HasExited => _process.Exited.IsCompleted;

    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    public string StateFile => Path.Combine(StateDirectory, "apphost.json");

    /// <summary>The build output of a project recorded by eng/ProjectOutputs.targets in <paramref name="assembly"/>.</summary>
    public static string ProjectOutput(Assembly assembly, string projectName) =>
        assembly.GetCustomAttributes<AssemblyMetadataAttribute>().SingleOrDefault(a => a.Key == $"PlatformProject:{projectName}")?.Value
        ?? throw new InvalidOperationException($"{assembly.GetName().Name} does not reference {projectName} (eng/ProjectOutputs.targets)");

    /// <summary>The repository's root as recorded by eng/ProjectOutputs.targets in <paramref name="assembly"/>.</summary>
    public static string RepositoryRoot(Assembly assembly) =>
        assembly.GetCustomAttributes<AssemblyMetadataAttribute>().SingleOrDefault(a => a.Key == "PlatformRepoRoot")?.Value
        ?? throw new InvalidOperationException($"{assembly.GetName().Name} records no repository root (eng/ProjectOutputs.targets)");

    /// <summary>A service's Native AOT build as eng/publish-native.sh writes it (artifacts/publish/SERVICE/ASSEMBLY), if any.</summary>
    public static string? NativeBuild(Assembly assembly, string assemblyName)
    {
        var publish = Path.Combine(RepositoryRoot(assembly), "artifacts", "publish");
        return Directory.Exists(publish) ? Directory.EnumerateDirectories(publish).Select(d => Path.Combine(d, assemblyName)).FirstOrDefault(File.Exists) : null;
    }

    /// <summary>The dashboard's address when started by <see cref="Start"/>.</summary>
    public string DashboardUrl { get; private set; } = "";

    /// <summary>
    /// Starts the built AppHost as `dotnet run --project AppHost` would, minus the build and the launch profile, whose
    /// settings are given here instead: a dashboard on free loopback ports, HTTP without a certificate, no login, and
    /// (as Aspire.Hosting.Testing does) random ports for every endpoint, so that runs never collide.
    /// </summary>
    public static AppHostProcess Start(string appHostDll, string stateDirectory, IReadOnlyDictionary<string, string>? environment = null)
    {
        // Through the platform's reaper, not System.Diagnostics.Process (the two must not be mixed, docs/architecture.md §6).
        var env = Environment(stateDirectory, environment);
        var dashboard = env["ASPNETCORE_URLS"];
        var host = new AppHostProcess(stateDirectory) { DashboardUrl = dashboard };
        host._process = ChildReaper.Shared.Spawn(new SpawnRequest("dotnet", [appHostDll], env, Path.GetDirectoryName(appHostDll), StdioTarget.Pipe, StdioTarget.Pipe));
        host.Pump(host._process.StandardOutput!);
        host.Pump(host._process.StandardError!);
        return host;
    }

    private void Pump(Stream stream) =>
        new Thread(() =>
        {
            using var reader = new StreamReader(stream);
            while (reader.ReadLine() is { } line) Append(line);
        }) { IsBackground = true }.Start();

    private void Append(string? line)
    {
        if (line is null) return;
        lock (_output) _output.AppendLine(line);
    }

    /// <summary>The environment <see cref="Start"/> gives the AppHost: this process's, plus what the launch profile would set.</summary>
    public static Dictionary<string, string> Environment(string stateDirectory, IReadOnlyDictionary<string, string>? environment = null)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in System.Environment.GetEnvironmentVariables()) env[(string)entry.Key] = (string?)entry.Value ?? "";
        env["PLATFORM_STATE_DIR"] = stateDirectory;
        env["NO_COLOR"] = "1";
        env["DOTNET_ENVIRONMENT"] = "Development";
        env["ASPNETCORE_ENVIRONMENT"] = "Development";
        env["ASPNETCORE_URLS"] = $"http://127.0.0.1:{FreePort()}";
        env["ASPIRE_DASHBOARD_OTLP_ENDPOINT_URL"] = $"http://127.0.0.1:{FreePort()}";
        env["ASPIRE_RESOURCE_SERVICE_ENDPOINT_URL"] = $"http://127.0.0.1:{FreePort()}";
        env["ASPIRE_ALLOW_UNSECURED_TRANSPORT"] = "true";
        env["ASPIRE_DASHBOARD_UNSECURED_ALLOW_ANONYMOUS"] = "true";
        env["DcpPublisher__RandomizePorts"] = "true";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>()) env[key] = value;
        return env;
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Reads apphost.json; null while it does not exist yet.</summary>
    public AppHostState? ReadState() => AppHostState.TryRead(StateDirectory);

    /// <summary>Polls apphost.json until <paramref name="condition"/> holds; fails with the AppHost's output otherwise.</summary>
    public async Task<AppHostState> WaitForStateAsync(Func<AppHostState, bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var state = ReadState();
            if (state is not null && state.Pid == Pid && condition(state)) return state;
            if (HasExited)
                throw new InvalidOperationException($"the AppHost exited with {_process.Exited.Result}:\n{Output}");
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"apphost.json did not reach the expected state in {timeout}:\n{(File.Exists(StateFile) ? File.ReadAllText(StateFile) : "(none)")}\n{Output}");
            await Task.Delay(50);
        }
    }

    /// <summary>grpc.health.v1 Check against a gRPC endpoint; the status, or null when it does not answer.</summary>
    public static async Task<HealthCheckResponse.Types.ServingStatus?> CheckHealthAsync(string grpcUrl)
    {
        using var channel = GrpcChannel.ForAddress(grpcUrl);
        try
        {
            var reply = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(2));
            return reply.Status;
        }
        catch (Grpc.Core.RpcException)
        {
            return null;
        }
    }

    /// <summary>Waits until every resource answers SERVING over grpc.health.v1.</summary>
    public async Task<AppHostState> WaitForAllServingAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var state = await WaitForStateAsync(s => s.AllUp, deadline - DateTime.UtcNow);
            var statuses = await Task.WhenAll(state.Resources.Select(r => CheckHealthAsync(r.GrpcUrl)));
            if (statuses.All(s => s == HealthCheckResponse.Types.ServingStatus.Serving)) return state;
            if (DateTime.UtcNow > deadline) throw new TimeoutException("not every resource answers SERVING:\n" + Output);
            await Task.Delay(50);
        }
    }

    /// <summary>Sends SIGTERM (as a terminal's Ctrl+C or systemd would) and waits for the exit code.</summary>
    public async Task<int> TerminateAsync(TimeSpan timeout)
    {
        Signal(Pid, SIGTERM);
        var exit = await _process.Exited.WaitAsync(timeout);
        return exit.Code ?? 128 + exit.Signal ?? -1;
    }

    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int SysKill(int pid, int signal);

    public static void Signal(int pid, int signal) => SysKill(pid, signal);

    /// <summary>
    /// Live (non-zombie) processes started for this state directory: every resource the AppHost starts has
    /// PLATFORM_DATA_DIR under it in its environment, and so does anything they start.
    /// </summary>
    public static List<int> PlatformProcesses(string stateDirectory)
    {
        var marker = Encoding.UTF8.GetBytes($"PLATFORM_DATA_DIR={stateDirectory}/");
        var found = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid) || pid == System.Environment.ProcessId) continue;
            try
            {
                if (ProcessControl.ProcFs.ReadStat(pid) is not { IsZombie: false }) continue;
                var environ = File.ReadAllBytes(Path.Combine(dir, "environ"));
                if (environ.AsSpan().IndexOf(marker) >= 0) found.Add(pid);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        return found;
    }

    /// <summary>
    /// Every process of this AppHost run that is alive now: the AppHost, its DCP, DCP's `monitor-process` helpers, the
    /// dashboard and the services (by their data directory).
    /// </summary>
    public List<(int Pid, string Command)> OwnProcesses()
    {
        var commands = CommandLines();
        var own = new HashSet<int> { Pid };
        own.UnionWith(PlatformProcesses(StateDirectory));
        own.UnionWith(DcpProcesses(Pid, commands));
        if (ReadState() is { } state && state.DashboardPid is { } dashboardPid) own.Add(dashboardPid);
        foreach (var (pid, command) in commands)
        {
            if (Argument(command, "--child") is { } child && int.TryParse(child, out var watched) && own.Contains(watched)) own.Add(pid);
        }
        return own.Where(commands.ContainsKey).Select(pid => (pid, string.Join(' ', commands[pid]))).ToList();
    }

    /// <summary>
    /// The DCP processes of an AppHost: the API server it started with `--monitor PID` (detached, so not in its
    /// process tree) and whatever shares that server's kubeconfig (the controllers).
    /// </summary>
    public static HashSet<int> DcpProcesses(int appHostPid, Dictionary<int, string[]>? commands = null)
    {
        commands ??= CommandLines();
        var monitor = appHostPid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var servers = commands.Where(c => Argument(c.Value, "--monitor") == monitor).ToList();
        var kubeconfigs = servers.Select(c => Argument(c.Value, "--kubeconfig")?.Trim('"')).Where(k => k is not null).ToHashSet();
        var dcp = servers.Select(c => c.Key).ToHashSet();
        foreach (var (pid, command) in commands)
        {
            if (Argument(command, "--kubeconfig")?.Trim('"') is { } k && kubeconfigs.Contains(k)) dcp.Add(pid);
        }
        return dcp;
    }

    /// <summary>The command line of every live (non-zombie) process.</summary>
    private static Dictionary<int, string[]> CommandLines()
    {
        var commands = new Dictionary<int, string[]>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid)) continue;
            try
            {
                if (ProcessControl.ProcFs.ReadStat(pid) is not { IsZombie: false }) continue;
                commands[pid] = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0', StringSplitOptions.RemoveEmptyEntries);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        return commands;
    }

    private static string? Argument(string[] command, string name)
    {
        var index = Array.IndexOf(command, name);
        return index >= 0 && index + 1 < command.Length ? command[index + 1] : null;
    }

    public async ValueTask DisposeAsync()
    {
        var left = HasExited ? [] : OwnProcesses();
        if (!HasExited) await ProcessTree.StopAsync(_process.Identity, TimeSpan.Zero);
        foreach (var (pid, _) in left) Signal(pid, SIGKILL);
        foreach (var pid in PlatformProcesses(StateDirectory)) Signal(pid, SIGKILL);
        // What the launchers started: a launcher keeps its children through its own exit (by design), so they outlive
        // the AppHost; their cgroup subtrees (one per launcher data directory under the state directory) name them.
        foreach (var pid in ContainedProcesses(StateDirectory)) Signal(pid, SIGKILL);
    }

    /// <summary>The processes in the cgroup subtree of any launcher whose data directory is under
    /// <paramref name="stateDirectory"/> (Launcher's Containment: platform-launcher-{sha256(data directory)[..12]}).</summary>
    public static List<int> ContainedProcesses(string stateDirectory)
    {
        var found = new List<int>();
        if (!Directory.Exists(stateDirectory)) return found;
        var subtrees = Directory.EnumerateDirectories(stateDirectory)
            .Select(d => "/platform-launcher-" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(Path.GetFullPath(d))))[..12] + "/")
            .ToList();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid) || pid == System.Environment.ProcessId) continue;
            try
            {
                var cgroup = File.ReadAllText(Path.Combine(dir, "cgroup"));
                if (subtrees.Any(t => cgroup.Contains(t, StringComparison.Ordinal))) found.Add(pid);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        return found;
    }
}
