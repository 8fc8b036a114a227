using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Options;
using Platform.Monitor.V1;
using Platform.Registry.V1;
using Platform.ServiceDefaults;

namespace Platform.AgentMonitor;

/// <summary>
/// Targets from registry sessions: an ACTIVE session whose attribute <see cref="MonitorOptions.ProbeAttribute"/> holds
/// a target in protobuf JSON (<c>{"process":{}}</c>, <c>{"tmuxPane":{"target":"agents:0.1"},"interval":"5s"}</c>) is
/// probed as target <c>session/&lt;id&gt;</c> of the session's workload; a process probe without a pid takes the
/// session's pid, a registry_heartbeat probe without a session id takes the session. A session that ends or
/// expires drops its target. Lists, then watches from the list's revision (no gap); relists after any break.
/// </summary>
public sealed class RegistryDiscovery(
    SessionRegistry.SessionRegistryClient registry,
    MonitorEngine engine,
    IOptions<MonitorOptions> options,
    TimeProvider time,
    ILogger<RegistryDiscovery> logger) : BackgroundService
{
    public const string IdPrefix = "session/";
    private static readonly JsonParser Json = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(false));
    private readonly Dictionary<string, string> _rejected = [];
    // Session id -> revision applied last: an older view of a session (a list racing a watch) never undoes a newer one.
    private readonly Dictionary<string, long> _applied = [];
    private readonly Lock _lock = new();
    private bool _listing;

    protected override Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!options.Value.DiscoverFromRegistry) return Task.CompletedTask;
        // List, then watch from the list's revision; after any break list again (1 s doubling to 30 s, at once when
        // the watch says it fell behind).
        return new Resubscriber("Registry discovery", logger, time)
        {
            Initial = TimeSpan.FromSeconds(1),
            Max = TimeSpan.FromSeconds(30),
            Meanwhile = "sessions registered meanwhile are discovered when it is back",
        }.RunAsync(async (up, token) =>
        {
            var revision = await ListAsync(token);
            using var watch = registry.WatchSessions(new WatchSessionsRequest { FromRevision = revision }, cancellationToken: token);
            await watch.ResponseHeadersAsync;
            // An empty store lists at revision 0, and watching from 0 means "from now": a session registered between
            // the two would be missed. Once subscribed, list again; revisions order the two.
            if (revision == 0) await ListAsync(token);
            up();
            await foreach (var change in watch.ResponseStream.ReadAllAsync(token)) Apply(change.Session);
        }, stoppingToken);
    }

    private async Task<long> ListAsync(CancellationToken cancellationToken)
    {
        lock (_lock) _listing = true;
        var live = new HashSet<string>(StringComparer.Ordinal);
        long revision = 0;
        var token = "";
        do
        {
            var page = await registry.ListSessionsAsync(new ListSessionsRequest { State = Session.Types.State.Active, PageSize = 1000, PageToken = token },
                deadline: DateTime.UtcNow.AddSeconds(10), cancellationToken: cancellationToken);
            if (revision == 0) revision = page.Revision;
            foreach (var session in page.Sessions)
            {
                live.Add(IdPrefix + session.Id);
                Apply(session);
            }
            token = page.NextPageToken;
        } while (token.Length > 0);
        foreach (var id in engine.TargetIds(t => t.SessionId.Length > 0 && t.Id.StartsWith(IdPrefix, StringComparison.Ordinal)))
            if (!live.Contains(id)) engine.Remove(id);
        lock (_lock)
        {
            foreach (var id in _applied.Keys.Where(k => !live.Contains(IdPrefix + k)).ToList()) _applied.Remove(id);
            _listing = false;
        }
        return revision;
    }

    /// <summary>Adds, updates or drops the target of one session.</summary>
    public void Apply(Session session)
    {
        lock (_lock)
        {
            if (_applied.TryGetValue(session.Id, out var seen) && seen > session.Revision) return;
            _applied[session.Id] = session.Revision;
            ApplyLocked(session);
        }
    }

    private void ApplyLocked(Session session)
    {
        var id = IdPrefix + session.Id;
        if (session.State != Session.Types.State.Active || !session.Attributes.TryGetValue(options.Value.ProbeAttribute, out var json))
        {
            engine.Remove(id);
            _rejected.Remove(id);
            // An ended session is forgotten at once, except while a list may still return an older view of it.
            if (session.State != Session.Types.State.Active && !_listing) _applied.Remove(session.Id);
            return;
        }
        var target = Parse(session, json, out var error);
        var v = new Violations();
        var spec = target is null ? null : TargetValidation.Validate(target, options.Value, v, prefix: "");
        if (spec is null)
        {
            error ??= v.ToString();
            if (!_rejected.TryGetValue(id, out var said) || said != error)
                logger.LogWarning("Session {Session} ({Workload}) has a probe spec the monitor cannot use: {Error}", session.Id, session.Workload, error);
            _rejected[id] = error;
            engine.Remove(id);
            return;
        }
        _rejected.Remove(id);
        engine.Upsert(spec);
    }

    private Target? Parse(Session session, string json, out string? error)
    {
        error = null;
        Target target;
        try
        {
            target = Json.Parse<Target>(json);
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or InvalidJsonException or FormatException or OverflowException)
        {
            error = $"attribute {options.Value.ProbeAttribute} is not a target in protobuf JSON: {e.Message}";
            return null;
        }
        target.Id = IdPrefix + session.Id;
        target.SessionId = session.Id;
        if (target.Workload.Length == 0) target.Workload = session.Workload;
        foreach (var (key, value) in session.Labels) target.Labels.TryAdd(key, value);
        if (target.ProbeCase == Target.ProbeOneofCase.Process && target.Process.Pid == 0) target.Process.Pid = session.Pid;
        if (target.ProbeCase == Target.ProbeOneofCase.RegistryHeartbeat && target.RegistryHeartbeat.SessionId.Length == 0)
            target.RegistryHeartbeat.SessionId = session.Id;
        return target;
    }
}
