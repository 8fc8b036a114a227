using System.Text.Json;
using Grpc.Core;
using Grpc.Net.Client;

namespace Platform.Cli;

/// <summary>
/// Where the platform is and how to call it. In order: <c>--endpoint</c> or <c>PLATFORM_ENDPOINT</c> (one URL for
/// every service, as behind a gateway that routes gRPC by service name, or <c>supervisor=URL,launcher=URL,...</c>);
/// else the running AppHost's <c>apphost.json</c> (<c>PLATFORM_STATE_DIR</c>, else <c>.platform/</c> in this directory
/// or the nearest parent that has one), which also holds the token. The token: <c>--token</c>, else
/// <c>PLATFORM_TOKEN</c>, else apphost.json's.
/// </summary>
public sealed class Connection : IDisposable
{
    public static readonly string[] Services = ["registry", "launcher", "monitor", "supervisor"];
    private readonly Dictionary<string, string> _grpc;
    private readonly Dictionary<string, GrpcChannel> _channels = new(StringComparer.Ordinal);
    private readonly string _token;

    private Connection(Dictionary<string, string> grpc, Dictionary<string, string> http, string token, string source)
    {
        _grpc = grpc;
        Http = http;
        _token = token;
        Source = source;
    }

    /// <summary>Where the addresses came from (shown by status and in the unreachable message).</summary>
    public string Source { get; }

    /// <summary>The services' HTTP endpoints (/health), when known (from apphost.json).</summary>
    public IReadOnlyDictionary<string, string> Http { get; }

    public string Address(string service) => _grpc.TryGetValue(service, out var url) ? url
        : throw new CliException(ExitCode.Unreachable, $"no address for the {service} ({Source}); give it as --endpoint {service}=URL");

    public static Connection Find(string? endpoint, string? token)
    {
        endpoint ??= Environment.GetEnvironmentVariable("PLATFORM_ENDPOINT");
        token ??= Environment.GetEnvironmentVariable("PLATFORM_TOKEN");
        if (!string.IsNullOrWhiteSpace(endpoint)) return FromEndpoint(endpoint, token ?? "");
        var file = FindStateFile() ?? throw new CliException(ExitCode.Unreachable,
            "no platform found: start one with 'dotnet run --project AppHost' in the repository, or set PLATFORM_ENDPOINT (or --endpoint) to its address");
        return FromStateFile(file, token);
    }

    private static Connection FromEndpoint(string endpoint, string token)
    {
        var grpc = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in endpoint.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var equals = part.IndexOf('=');
            var (service, url) = equals < 0 ? ("*", part) : (part[..equals], part[(equals + 1)..]);
            if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
                throw new CliException(ExitCode.Usage, $"the endpoint '{url}' is not an http:// or https:// URL");
            if (service == "*") foreach (var s in Services) grpc.TryAdd(s, url);
            else if (Services.Contains(service)) grpc[service] = url;
            else throw new CliException(ExitCode.Usage, $"unknown service '{service}' in the endpoint (one of {string.Join(", ", Services)})");
        }
        return new Connection(grpc, [], token, "the endpoint given");
    }

    /// <summary>PLATFORM_STATE_DIR's apphost.json, else .platform/apphost.json here or in the nearest parent.</summary>
    public static string? FindStateFile()
    {
        var configured = Environment.GetEnvironmentVariable("PLATFORM_STATE_DIR");
        if (!string.IsNullOrWhiteSpace(configured))
        {
            var path = Path.Combine(configured, "apphost.json");
            return File.Exists(path) ? path : null;
        }
        for (var directory = new DirectoryInfo(Environment.CurrentDirectory); directory is not null; directory = directory.Parent)
        {
            var path = Path.Combine(directory.FullName, ".platform", "apphost.json");
            if (File.Exists(path)) return path;
        }
        return null;
    }

    private static Connection FromStateFile(string file, string? token)
    {
        var grpc = new Dictionary<string, string>(StringComparer.Ordinal);
        var http = new Dictionary<string, string>(StringComparer.Ordinal);
        string fileToken;
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllBytes(file));
            var root = json.RootElement;
            fileToken = root.TryGetProperty("token", out var t) ? t.GetString() ?? "" : "";
            foreach (var resource in root.GetProperty("resources").EnumerateArray())
            {
                var name = resource.GetProperty("name").GetString() ?? "";
                if (!resource.TryGetProperty("endpoints", out var endpoints)) continue;
                if (endpoints.TryGetProperty("grpc", out var g) && g.GetString() is { Length: > 0 } grpcUrl) grpc[name] = grpcUrl;
                if (endpoints.TryGetProperty("http", out var h) && h.GetString() is { Length: > 0 } httpUrl) http[name] = httpUrl;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new CliException(ExitCode.Unreachable, $"cannot read {file}: {e.Message}");
        }
        return new Connection(grpc, http, token ?? fileToken, file);
    }

    public GrpcChannel Channel(string service) => Open(service, Address(service));

    private GrpcChannel Open(string key, string address)
    {
        if (_channels.TryGetValue(key, out var channel)) return channel;
        var options = new GrpcChannelOptions();
        if (_token.Length > 0)
        {
            var header = $"Bearer {_token}";
            options.Credentials = ChannelCredentials.Create(ChannelCredentials.Insecure, CallCredentials.FromInterceptor((_, metadata) =>
            {
                metadata.Add("authorization", header);
                return Task.CompletedTask;
            }));
            options.UnsafeUseInsecureChannelCallCredentials = true;
        }
        return _channels[key] = GrpcChannel.ForAddress(address, options);
    }

    /// <summary>
    /// The launchers: one per node when launchers announce their nodes in the registry (sessions of the workload
    /// platform-node, each with its own address), else the one "launcher" service (node name "").
    /// </summary>
    public Task<IReadOnlyList<(string Node, global::Platform.Launcher.V1.Launcher.LauncherClient Client)>> LaunchersAsync(DateTime deadline, CancellationToken cancellationToken) =>
        _launchers ??= FindLaunchersAsync(deadline, cancellationToken); // asked once per command (logs: the instance, then its node)

    private Task<IReadOnlyList<(string Node, global::Platform.Launcher.V1.Launcher.LauncherClient Client)>>? _launchers;

    private async Task<IReadOnlyList<(string Node, global::Platform.Launcher.V1.Launcher.LauncherClient Client)>> FindLaunchersAsync(DateTime deadline, CancellationToken cancellationToken)
    {
        try
        {
            var page = await Registry.ListSessionsAsync(new global::Platform.Registry.V1.ListSessionsRequest
            {
                Workload = "platform-node",
                State = global::Platform.Registry.V1.Session.Types.State.Active,
                PageSize = 1000,
            }, deadline: deadline, cancellationToken: cancellationToken);
            var nodes = page.Sessions.Where(s => s.Attributes.TryGetValue("address", out var a) && Uri.TryCreate(a, UriKind.Absolute, out _))
                .OrderBy(s => s.Instance, StringComparer.Ordinal)
                .Select(s => (s.Instance, new global::Platform.Launcher.V1.Launcher.LauncherClient(Open($"node:{s.Instance}", s.Attributes["address"]))))
                .ToList();
            if (nodes.Count > 0) return nodes;
        }
        catch (RpcException)
        {
            // No registry to ask: the one launcher.
        }
        return [("", Launcher)];
    }

    public global::Platform.Supervisor.V1.Supervisor.SupervisorClient Supervisor => new(Channel("supervisor"));

    public global::Platform.Launcher.V1.Launcher.LauncherClient Launcher => new(Channel("launcher"));

    public global::Platform.Registry.V1.SessionRegistry.SessionRegistryClient Registry => new(Channel("registry"));

    public global::Platform.Monitor.V1.AgentMonitor.AgentMonitorClient Monitor => new(Channel("monitor"));

    public void Dispose()
    {
        foreach (var channel in _channels.Values) channel.Dispose();
    }
}
