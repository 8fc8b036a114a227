using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Grpc.Health.V1;

namespace Platform.Testing;

/// <summary>
/// One platform service started as its own process from its build output (as the AppHost starts it), on free
/// loopback ports, with a data directory of the test's. Disposing it kills it.
/// </summary>
public sealed class ServiceProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private ServiceProcess(Process process, string grpcUrl, string httpUrl)
    {
        _process = process;
        GrpcUrl = grpcUrl;
        HttpUrl = httpUrl;
    }

    public string GrpcUrl { get; }

    public string HttpUrl { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

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

    /// <summary>Starts <paramref name="assemblyPath"/> and waits until it answers SERVING over grpc.health.v1.</summary>
    public static async Task<ServiceProcess> StartAsync(string assemblyPath, string dataDirectory, IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null)
    {
        var grpc = $"http://127.0.0.1:{FreePort()}";
        var http = $"http://127.0.0.1:{FreePort()}";
        var info = new ProcessStartInfo("dotnet")
        {
            ArgumentList = { assemblyPath },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(assemblyPath)!,
        };
        info.Environment["Kestrel__Endpoints__grpc__Url"] = grpc;
        info.Environment["Kestrel__Endpoints__grpc__Protocols"] = "Http2";
        info.Environment["Kestrel__Endpoints__http__Url"] = http;
        info.Environment["Kestrel__Endpoints__http__Protocols"] = "Http1";
        info.Environment["PLATFORM_DATA_DIR"] = dataDirectory;
        foreach (var (key, value) in environment ?? new Dictionary<string, string>()) info.Environment[key] = value;

        var process = new Process { StartInfo = info };
        var service = new ServiceProcess(process, grpc, http);
        process.OutputDataReceived += (_, e) => service.Append(e.Data);
        process.ErrorDataReceived += (_, e) => service.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (await AppHostProcess.CheckHealthAsync(grpc) != HealthCheckResponse.Types.ServingStatus.Serving)
        {
            if (process.HasExited || DateTime.UtcNow > deadline)
            {
                await service.DisposeAsync();
                throw new InvalidOperationException($"{Path.GetFileName(assemblyPath)} did not become SERVING:\n{service.Output}");
            }
            await Task.Delay(50);
        }
        return service;
    }

    private void Append(string? line)
    {
        if (line is null) return;
        lock (_output) _output.AppendLine(line);
    }

    /// <summary>SIGKILL: no shutdown code runs.</summary>
    public async Task KillAsync()
    {
        AppHostProcess.Signal(Pid, AppHostProcess.SIGKILL);
        await _process.WaitForExitAsync();
    }

    /// <summary>SIGTERM and the exit code.</summary>
    public async Task<int> StopAsync(TimeSpan timeout)
    {
        AppHostProcess.Signal(Pid, AppHostProcess.SIGTERM);
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited) await KillAsync();
        _process.Dispose();
    }
}
