using System.Text.RegularExpressions;
using Google.Protobuf.WellKnownTypes;
using Platform.Monitor.V1;
using Platform.ServiceDefaults;

namespace Platform.AgentMonitor;

/// <summary>A validated target: the caller's <see cref="Target"/> with every default filled in, and what its probe needs
/// parsed once (endpoints, compiled patterns).</summary>
public sealed class TargetSpec
{
    public required Target Target
    {
        get;
        init
        {
            field = value;
            ProbeKind = value.ProbeCase.ToString();
        }
    }
    public string Id => Target.Id;
    public string Workload => Target.Workload;
    public required TimeSpan Interval { get; init; }
    public required TimeSpan Timeout { get; init; }
    public required TimeSpan IdleAfter { get; init; }
    public required int FailureThreshold { get; init; }
    /// <summary>For grpc_health and http: the absolute URI; for tcp: host and port.</summary>
    public Uri? Endpoint { get; init; }
    public Regex[] UnhealthyPatterns { get; init; } = [];
    public Regex[] IdlePatterns { get; init; } = [];

    /// <summary>The probe kind as a metric tag.</summary>
    public string ProbeKind { get; private set; } = "";

    public bool IsActivityProbe => Target.ProbeCase is Target.ProbeOneofCase.OutputActivity or Target.ProbeOneofCase.TmuxPane;
}

/// <summary>Checks a <see cref="Target"/> field by field (google.rpc.BadRequest violations) and builds its spec.</summary>
public static class TargetValidation
{
    public const int MaxIdLength = 253;
    public const int MaxPatterns = 32;
    public const int MaxPatternLength = 1024;
    public static readonly TimeSpan MaxInterval = TimeSpan.FromHours(24);
    public static readonly TimeSpan MaxTimeout = TimeSpan.FromMinutes(10);
    /// <summary>Match timeout of one pattern against one line: a pathological pattern cannot hold a probe.</summary>
    public static readonly TimeSpan PatternMatchTimeout = TimeSpan.FromMilliseconds(100);

    public static TargetSpec? Validate(Target? target, MonitorOptions options, Violations v, string prefix = "target.")
    {
        if (target is null)
        {
            v.Add("target", "is required");
            return null;
        }
        if (target.Id.Length is 0 or > MaxIdLength) v.Add(prefix + "id", $"must be 1-{MaxIdLength} characters");
        else if (target.Id.Any(c => char.IsControl(c) || char.IsWhiteSpace(c))) v.Add(prefix + "id", "must not contain spaces or control characters");
        if (target.Workload.Length > 0) WorkloadName.Check(v, prefix + "workload", target.Workload);

        var interval = Duration(target.Interval, prefix + "interval", options.DefaultInterval, MaxInterval, v);
        var timeout = Duration(target.Timeout, prefix + "timeout", options.DefaultTimeout, MaxTimeout, v);
        var idleAfter = Duration(target.IdleAfter, prefix + "idle_after", options.DefaultIdleAfter, MaxInterval, v);
        if (target.FailureThreshold < 0 || target.FailureThreshold > 1000) v.Add(prefix + "failure_threshold", "must be between 1 and 1000 (0: the default, 3)");
        var threshold = target.FailureThreshold == 0 ? options.DefaultFailureThreshold : target.FailureThreshold;

        Uri? endpoint = null;
        Regex[] unhealthy = [], idle = [];
        var p = prefix;
        switch (target.ProbeCase)
        {
            case Target.ProbeOneofCase.Process:
                if (target.Process.Pid <= 0) v.Add(p + "process.pid", "must be a positive process id");
                break;
            case Target.ProbeOneofCase.HeartbeatFile:
                AbsolutePath(target.HeartbeatFile.Path, p + "heartbeat_file.path", v);
                Duration(target.HeartbeatFile.MaxAge, p + "heartbeat_file.max_age", options.DefaultHeartbeatMaxAge, MaxInterval, v);
                break;
            case Target.ProbeOneofCase.RegistryHeartbeat:
                if (target.RegistryHeartbeat.SessionId.Length == 0) v.Add(p + "registry_heartbeat.session_id", "is required");
                Duration(target.RegistryHeartbeat.MaxAge, p + "registry_heartbeat.max_age", TimeSpan.Zero, MaxInterval, v);
                break;
            case Target.ProbeOneofCase.GrpcHealth:
                endpoint = HostPort(target.GrpcHealth.Address, p + "grpc_health.address", allowScheme: true, v);
                break;
            case Target.ProbeOneofCase.Http:
                if (!Uri.TryCreate(target.Http.Url, UriKind.Absolute, out endpoint) || endpoint.Scheme is not ("http" or "https") || endpoint.Host.Length == 0)
                {
                    v.Add(p + "http.url", $"'{target.Http.Url}' is not an absolute http:// or https:// URL");
                    endpoint = null;
                }
                break;
            case Target.ProbeOneofCase.Tcp:
                endpoint = HostPort(target.Tcp.Address, p + "tcp.address", allowScheme: false, v);
                break;
            case Target.ProbeOneofCase.OutputActivity:
                AbsolutePath(target.OutputActivity.Path, p + "output_activity.path", v);
                unhealthy = Patterns(target.OutputActivity.UnhealthyPatterns, p + "output_activity.unhealthy_patterns", v);
                idle = Patterns(target.OutputActivity.IdlePatterns, p + "output_activity.idle_patterns", v);
                break;
            case Target.ProbeOneofCase.TmuxPane:
                if (target.TmuxPane.Target.Length == 0 || target.TmuxPane.Target.Any(char.IsControl))
                    v.Add(p + "tmux_pane.target", "is required: a tmux target such as 'session:window.pane' or a pane id like '%3'");
                else if (target.TmuxPane.Target.Contains('\''))
                    v.Add(p + "tmux_pane.target", "must not contain a single quote"); // it goes into a tmux command line, quoted
                if (target.TmuxPane.SocketPath.Length > 0) AbsolutePath(target.TmuxPane.SocketPath, p + "tmux_pane.socket_path", v);
                unhealthy = Patterns(target.TmuxPane.UnhealthyPatterns, p + "tmux_pane.unhealthy_patterns", v);
                idle = Patterns(target.TmuxPane.IdlePatterns, p + "tmux_pane.idle_patterns", v);
                break;
            default:
                v.Add(p + "probe", "is missing or of a kind this monitor does not know; set one of process, heartbeat_file, " +
                    "registry_heartbeat, grpc_health, http, tcp, output_activity, tmux_pane");
                break;
        }
        if (v.Any) return null;

        var normalized = target.Clone();
        normalized.Interval = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(interval);
        normalized.Timeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(timeout);
        normalized.IdleAfter = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(idleAfter);
        normalized.FailureThreshold = threshold;
        return new TargetSpec
        {
            Target = normalized, Interval = interval, Timeout = timeout, IdleAfter = idleAfter, FailureThreshold = threshold,
            Endpoint = endpoint, UnhealthyPatterns = unhealthy, IdlePatterns = idle,
        };
    }

    private static TimeSpan Duration(Duration? value, string field, TimeSpan fallback, TimeSpan max, Violations v)
    {
        if (value is null) return fallback;
        if (value.Seconds < 0 || value.Nanos < 0 || (value.Seconds == 0 && value.Nanos == 0))
        {
            v.Add(field, "must be positive");
            return fallback;
        }
        if (!Durations.IsValid(value))
        {
            v.Add(field, Durations.NotADuration);
            return fallback;
        }
        var span = value.ToTimeSpan();
        if (span > max) v.Add(field, $"must be at most {max}");
        return span;
    }

    private static void AbsolutePath(string path, string field, Violations v)
    {
        if (path.Length == 0 || !Path.IsPathFullyQualified(path) || path.Contains('\0')) v.Add(field, $"'{path}' is not an absolute path");
    }

    /// <summary>"host:port", or with <paramref name="allowScheme"/> also "http://host:port" / "https://host:port".</summary>
    private static Uri? HostPort(string address, string field, bool allowScheme, Violations v)
    {
        var hasScheme = address.Contains("://", StringComparison.Ordinal);
        var text = hasScheme ? address : "http://" + address;
        if ((!hasScheme || allowScheme) && Uri.TryCreate(text, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" &&
            uri.Host.Length > 0 && uri.AbsolutePath == "/" && uri.Query.Length == 0 && uri.UserInfo.Length == 0 &&
            HasExplicitPort(hasScheme ? address[(address.IndexOf("://", StringComparison.Ordinal) + 3)..] : address))
            return uri;
        v.Add(field, allowScheme
            ? $"'{address}' is not an address: use host:port or http://host:port"
            : $"'{address}' is not an address: use host:port");
        return null;
    }

    private static bool HasExplicitPort(string authority)
    {
        authority = authority.TrimEnd('/');
        var colon = authority.LastIndexOf(':');
        return colon > 0 && colon > authority.LastIndexOf(']') &&
            int.TryParse(authority[(colon + 1)..], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port) &&
            port is > 0 and <= 65535;
    }

    private static Regex[] Patterns(IList<string> patterns, string field, Violations v)
    {
        if (patterns.Count > MaxPatterns) v.Add(field, $"at most {MaxPatterns} patterns");
        var result = new List<Regex>();
        for (var i = 0; i < patterns.Count; i++)
        {
            if (patterns[i].Length is 0 or > MaxPatternLength)
            {
                v.Add($"{field}[{i}]", $"must be 1-{MaxPatternLength} characters");
                continue;
            }
            try
            {
                result.Add(new Regex(patterns[i], RegexOptions.CultureInvariant, PatternMatchTimeout));
            }
            catch (ArgumentException e)
            {
                v.Add($"{field}[{i}]", $"is not a valid regular expression: {e.Message}");
            }
        }
        return [.. result];
    }
}
