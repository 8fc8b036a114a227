using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Platform.Launcher.V1;
using Platform.Registry.V1;
using Platform.ServiceDefaults;

namespace Platform.Launcher;

/// <summary>
/// Keeps the registry's picture of this node's instances: a session per instance (registered at launch, ended at
/// exit) and its lease renewed while the instance runs. Calls go through a durable outbox in the launcher's store,
/// replayed in order: while the registry is unreachable the launcher keeps launching and stopping, its health says
/// Degraded, and nothing it owes the registry is lost (a restart of the launcher replays the rest).
/// </summary>
public sealed class SessionSync(
    InstanceStore store,
    InstanceManager instances,
    SessionRegistry.SessionRegistryClient registry,
    ILogger<SessionSync> logger) : BackgroundService, IHealthCheck
{
    public const string Register = "register";
    public const string End = "end";
    public static readonly TimeSpan SessionTtl = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan CallDeadline = TimeSpan.FromSeconds(2);
    private readonly SemaphoreSlim _wake = new(0);
    private volatile string? _lastError;
    private CallBatcher<RegisterSessionRequest, Session>? _registrations;
    private volatile bool _singles;

    /// <summary>Registrations before a start, made at the same time by many launches, go to the registry together.</summary>
    private CallBatcher<RegisterSessionRequest, Session> Registrations =>
        LazyInitializer.EnsureInitialized(ref _registrations, () => new(RegisterAsync, maxBatch: BatchCalls.MaxItems, maxInFlight: 2));

    /// <summary>One RegisterSessions call for the batch; single RegisterSession calls to a registry without it.</summary>
    private async Task<BatchOutcome<Session>[]> RegisterAsync(RegisterSessionRequest[] batch)
    {
        if (!_singles)
        {
            try
            {
                var response = await registry.RegisterSessionsAsync(new RegisterSessionsRequest { Requests = { batch } }, deadline: DateTime.UtcNow + CallDeadline);
                return [.. response.Results.Select(r => BatchOutcome<Session>.Of(r.Code, r.Message, r.Session))];
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unimplemented)
            {
                _singles = true; // a registry from before RegisterSessions
            }
        }
        return await Task.WhenAll(batch.Select(async request =>
        {
            try
            {
                return new BatchOutcome<Session>(await registry.RegisterSessionAsync(request, deadline: DateTime.UtcNow + CallDeadline), null);
            }
            catch (Exception e)
            {
                return new BatchOutcome<Session>(null, e);
            }
        }));
    }

    /// <summary>
    /// Registers a session before the instance starts, so that the child gets PLATFORM_SESSION_ID; only while the
    /// registry is known to be reachable and nothing is queued (a launch never waits on a registry that is down).
    /// Registrations made at the same time go in one RegisterSessions call. Returns null when it could not; the
    /// queued registration after the start then creates the session.
    /// </summary>
    public async Task<string?> TryRegisterNowAsync(string instanceId, string workload, string node, IReadOnlyDictionary<string, string> labels)
    {
        if (_lastError is not null || store.OutboxCount() > 0) return null;
        try
        {
            var session = await Registrations.CallAsync(new RegisterSessionRequest
            {
                Workload = workload,
                Instance = instanceId,
                Node = node,
                Labels = { labels.ToDictionary() },
                Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(SessionTtl),
                RequestId = $"launcher:{instanceId}:before-start",
            });
            return session.Id;
        }
        catch (Exception e) when (e is RpcException or InvalidOperationException)
        {
            logger.LogWarning("Could not register the session of instance {Id} before its start ({Error}); it is queued", instanceId, Describe(e));
            _lastError = Describe(e);
            _wake.Release();
            return null;
        }
    }

    /// <summary>Queues the registration of an instance's session and wakes the replayer.</summary>
    public void QueueRegister(Instance instance, IReadOnlyDictionary<string, string> attributes)
    {
        var request = new RegisterSessionRequest
        {
            Workload = instance.Workload,
            Instance = instance.Id,
            Node = instance.Node,
            Pid = instance.Pid,
            Labels = { instance.Labels },
            Attributes = { attributes.ToDictionary() },
            Ttl = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(SessionTtl),
            RequestId = $"launcher:{instance.Id}",
        };
        store.Enqueue(instance.Id, Register, request.ToByteArray());
        _wake.Release();
    }

    public void QueueEnd(Instance instance, string reason)
    {
        store.Enqueue(instance.Id, End, new EndSessionRequest { Reason = reason }.ToByteArray());
        _wake.Release();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var nextRenewal = DateTime.UtcNow;
        // While the registry is unreachable: the same work again after 250 ms doubling to 5 s.
        var retry = BackgroundRetry.Forever(TimeSpan.FromMilliseconds(250), TimeSpan.FromSeconds(5), TimeProvider.System,
            e => e is RpcException or InvalidOperationException,
            (e, _) =>
            {
                if (_lastError is null) logger.LogWarning("The registry is unreachable ({Error}); session calls are queued", Describe(e));
                _lastError = Describe(e);
            });
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await retry.ExecuteAsync(async token =>
                {
                    await ReplayAsync(token);
                    if (DateTime.UtcNow >= nextRenewal)
                    {
                        await RenewAsync(token);
                        nextRenewal = DateTime.UtcNow + SessionTtl / 3;
                    }
                }, stoppingToken);
                if (_lastError is not null) logger.LogInformation("The registry is reachable again; session calls are replayed");
                _lastError = null;
                await _wake.WaitAsync(SessionTtl / 3, stoppingToken);
            }
            catch (Exception) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
        }
    }

    /// <summary>Sends the queued calls in order; each is idempotent (request ids; ending twice is a no-op).</summary>
    private async Task ReplayAsync(CancellationToken cancellationToken)
    {
        while (store.Outbox(100) is { Count: > 0 } items)
        {
            foreach (var (seq, instanceId, kind, payload) in items)
            {
                if (kind == Register)
                {
                    var session = await registry.RegisterSessionAsync(RegisterSessionRequest.Parser.ParseFrom(payload),
                        deadline: DateTime.UtcNow + CallDeadline, cancellationToken: cancellationToken);
                    instances.SetSession(instanceId, session.Id);
                }
                else if (instances.SessionOf(instanceId) is { Length: > 0 } sessionId)
                {
                    var request = EndSessionRequest.Parser.ParseFrom(payload);
                    request.Id = sessionId;
                    try
                    {
                        await registry.EndSessionAsync(request, deadline: DateTime.UtcNow + CallDeadline, cancellationToken: cancellationToken);
                    }
                    catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
                    {
                        // Pruned by the registry long ago: nothing left to end.
                    }
                }
                store.Dequeue(seq);
            }
        }
    }

    /// <summary>Renews the leases of the running instances' sessions; re-registers the ones that expired.</summary>
    private async Task RenewAsync(CancellationToken cancellationToken)
    {
        var running = instances.RunningSessions();
        if (running.Count == 0) return;
        var reply = await registry.HeartbeatAsync(new HeartbeatRequest { Ids = { running.Keys } },
            deadline: DateTime.UtcNow + CallDeadline, cancellationToken: cancellationToken);
        foreach (var lost in reply.ExpiredIds.Concat(reply.UnknownIds))
        {
            var instance = running[lost];
            logger.LogWarning("The session of instance {Id} expired while the registry was out of reach; registering it again", instance.Id);
            instances.SetSession(instance.Id, "");
            QueueRegister(instance, new Dictionary<string, string>());
        }
    }

    /// <summary>An RPC failure, or no endpoint known for the registry (service discovery found none).</summary>
    private static string Describe(Exception e) => e is RpcException rpc ? $"{rpc.StatusCode}: {rpc.Status.Detail}" : e.Message;

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var pending = store.OutboxCount();
        return Task.FromResult(_lastError is null
            ? HealthCheckResult.Healthy($"{pending} session calls pending")
            : HealthCheckResult.Degraded($"the registry is unreachable ({_lastError}); {pending} session calls queued"));
    }
}
