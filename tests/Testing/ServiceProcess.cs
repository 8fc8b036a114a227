using System.Collections;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Grpc.Health.V1;
using Platform.ProcessControl;

namespace Platform.Testing;

/// <summary>
/// One platform service started as its own process from its build output (as the AppHost starts it), on free
/// loopback ports, with a data directory of the test's. Disposing it kills it.
/// </summary>
public sealed class ServiceProcess : IAsyncDisposable
{
    private readonly StringBuilder _output = new();
    private SpawnedProcess _process = null!;

    private ServiceProcess(string grpcUrl, string httpUrl)
    {
        GrpcUrl = grpcUrl;
        HttpUrl = httpUrl;
    }

    public string GrpcUrl { get; }

    public string HttpUrl { get; }

    public int Pid => _process.Pid;

    public bool HasExited => _process.Exited.IsCompleted;

    public ProcessIdentity Identity => _process.Identity;

    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>
    /// Starts <paramref name="assemblyPath"/> and waits until it answers SERVING over grpc.health.v1; on
    /// <paramref name="grpcUrl"/> when given (so that others can be told it before it runs), else on a free port.
    /// </summary>
    public static async Task<ServiceProcess> StartAsync(string assemblyPath, string dataDirectory, IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null, string? grpcUrl = null,
        HealthCheckResponse.Types.ServingStatus until = HealthCheckResponse.Types.ServingStatus.Serving)
    {
        // A free port can be taken by another test between FreePort() and the service's bind: then try new ports.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await StartOnceAsync(assemblyPath, dataDirectory, environment, timeout, grpcUrl, until);
            }
            catch (InvalidOperationException e) when (grpcUrl is null && attempt < 3 && e.Message.Contains("address already in use", StringComparison.Ordinal))
            {
            }
        }
    }

    private static async Task<ServiceProcess> StartOnceAsync(string assemblyPath, string dataDirectory, IReadOnlyDictionary<string, string>? environment, TimeSpan? timeout, string? grpcUrl,
        HealthCheckResponse.Types.ServingStatus until)
    {
        var grpc = grpcUrl ?? $"http://127.0.0.1:{FreePort()}";
        var http = $"http://127.0.0.1:{FreePort()}";
        // Started through the platform's own reaper, not System.Diagnostics.Process: test processes that host a
        // launcher reap every child, and the two must not be mixed (docs/architecture.md §6).
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in Environment.GetEnvironmentVariables()) env[(string)entry.Key] = (string?)entry.Value ?? "";
        env["Kestrel__Endpoints__grpc__Url"] = grpc;
        env["Kestrel__Endpoints__grpc__Protocols"] = "Http2";
        env["Kestrel__Endpoints__http__Url"] = http;
        env["Kestrel__Endpoints__http__Protocols"] = "Http1";
        env["PLATFORM_DATA_DIR"] = dataDirectory;
        foreach (var (key, value) in environment ?? new Dictionary<string, string>()) env[key] = value;

        var service = new ServiceProcess(grpc, http);
        // A .dll runs on the dotnet host; anything else (a Native AOT build) runs as it is.
        var (executable, args) = assemblyPath.EndsWith(".dll", StringComparison.Ordinal) ? ("dotnet", new[] { assemblyPath }) : (assemblyPath, []);
        service._process = ChildReaper.Shared.Spawn(new SpawnRequest(executable, args, env, Path.GetDirectoryName(assemblyPath), StdioTarget.Pipe, StdioTarget.Pipe));
        service.Pump(service._process.StandardOutput!);
        service.Pump(service._process.StandardError!);

        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        // SERVING from this process's own socket: a free port taken by another test's server between FreePort() and
        // the bind answers the health check too (then every call is UNIMPLEMENTED), while this process fails to bind.
        while (await AppHostProcess.CheckHealthAsync(grpc) != until || !Listens(service.Pid, new Uri(grpc).Port))
        {
            if (service.HasExited || DateTime.UtcNow > deadline)
            {
                await service.DisposeAsync();
                throw new InvalidOperationException($"{Path.GetFileName(assemblyPath)} did not become SERVING:\n{service.Output}");
            }
            await Task.Delay(50);
        }
        return service;
    }

    /// <summary>Whether <paramref name="pid"/> holds the socket listening on 127.0.0.1:<paramref name="port"/>
    /// (/proc/net/tcp's inode of the listener among the process's descriptors).</summary>
    private static bool Listens(int pid, int port)
    {
        var inodes = new HashSet<string>(StringComparer.Ordinal);
        foreach (var table in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
        {
            if (!File.Exists(table)) continue;
            foreach (var line in File.ReadLines(table).Skip(1))
            {
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length < 10 || fields[3] != "0A") continue; // LISTEN
                var local = fields[1];
                if (int.Parse(local[(local.LastIndexOf(':') + 1)..], System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture) == port) inodes.Add(fields[9]);
            }
        }
        if (inodes.Count == 0) return false;
        try
        {
            foreach (var fd in Directory.EnumerateFiles($"/proc/{pid}/fd"))
                if (new FileInfo(fd).LinkTarget is { } target && target.StartsWith("socket:[", StringComparison.Ordinal) && inodes.Contains(target[8..^1])) return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return false;
    }

    private void Pump(Stream stream) =>
        new Thread(() =>
        {
            using var reader = new StreamReader(stream);
            while (reader.ReadLine() is { } line)
            {
                lock (_output) _output.AppendLine(line);
            }
        }) { IsBackground = true }.Start();

    /// <summary>SIGKILL: no shutdown code runs.</summary>
    public async Task KillAsync()
    {
        ProcessTree.Signal(Identity, ProcessTree.SIGKILL);
        try
        {
            await _process.Exited.WaitAsync(TimeSpan.FromSeconds(30));
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"pid {Pid} was SIGKILLed and its exit not seen in 30 s (state: {ProcFs.ReadStat(Pid)?.State.ToString() ?? "gone"})");
        }
    }

    /// <summary>SIGTERM and the exit code.</summary>
    public async Task<ExitStatus> StopAsync(TimeSpan timeout)
    {
        ProcessTree.Signal(Identity, ProcessTree.SIGTERM);
        return await _process.Exited.WaitAsync(timeout);
    }

    public async ValueTask DisposeAsync()
    {
        if (!HasExited) await KillAsync();
    }
}
