using System.Threading.Channels;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Options;
using Platform.Registry.V1;
using Platform.ServiceDefaults;
using Platform.SessionRegistry.Store;

namespace Platform.SessionRegistry;

/// <summary>
/// The registry's state machine. Every write (register, end, expire, maintenance) is a command on one queue; a
/// single writer drains the queue in batches and commits each batch as one transaction, so concurrent requests share
/// one fsync (group commit) and are serialized: (workload, instance) can never get two live sessions, however many
/// registrations race. Callers are answered, and watchers see the events, only after the commit is durable.
/// Renewals never touch the queue: they are answered from the in-memory <see cref="LeaseTable"/>.
/// </summary>
public sealed class RegistryEngine(
    ISessionStore store,
    IOptions<RegistryOptions> options,
    TimeProvider time,
    ILogger<RegistryEngine> logger) : BackgroundService
{
    private readonly RegistryOptions _options = options.Value;
    private readonly Channel<Command> _commands = Channel.CreateUnbounded<Command>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Dictionary<(string Workload, string Instance), string> _active = [];
    private readonly Dictionary<string, (string SessionId, DateTimeOffset Time)> _requests = new(StringComparer.Ordinal);
    private long _revision;

    public LeaseTable Leases { get; } = new();

    public WatchHub Hub { get; } = new(options.Value.WatchHistory, options.Value.WatchBuffer);

    /// <summary>Writes committed since start.</summary>
    public long CommittedWrites => Interlocked.Read(ref _committedWrites);

    private long _committedWrites;
    private long _commits;

    /// <summary>Transactions committed since start (writes / commits = the mean group-commit batch).</summary>
    public long Commits => Interlocked.Read(ref _commits);

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        LoadMemory();
        logger.LogInformation("Registry store loaded: revision {Revision}, {Active} live sessions", _revision, Leases.Count);
        return base.StartAsync(cancellationToken);
    }

    private void LoadMemory()
    {
        var now = time.GetUtcNow();
        var state = store.Load(_options.WatchHistory, now - _options.Retention);
        _active.Clear();
        _requests.Clear();
        foreach (var session in state.Active)
        {
            _active[(session.Workload, session.Instance)] = session.Id;
            Leases.Add(session.Id, session.Ttl, now);
        }
        foreach (var (requestId, sessionId, at) in state.Requests) _requests[requestId] = (sessionId, at);
        _revision = state.Revision;
        Hub.Seed(state.Revision, state.RecentEvents);
    }

    // ---- Reads (any thread) ----

    public Session? Get(string id) => store.Get(id) is { } session ? WithLease(session) : null;

    public List<Session> List(string workload, Session.Types.State state, LabelSelector selector, string afterId, int pageSize, out bool more)
    {
        var result = new List<Session>(pageSize);
        var chunk = Math.Max(pageSize + 1, 256);
        more = false;
        while (true)
        {
            var rows = store.List(workload, state, afterId, chunk);
            foreach (var row in rows)
            {
                if (!selector.Matches(row.Labels)) continue;
                if (result.Count == pageSize)
                {
                    more = true;
                    return result;
                }
                result.Add(WithLease(row));
            }
            if (rows.Count < chunk) return result;
            afterId = rows[^1].Id;
        }
    }

    /// <summary>Renews leases from memory; unknown ids are told apart from ended or expired ones by the store.</summary>
    public HeartbeatResponse Heartbeat(IEnumerable<string> ids)
    {
        var clock = time.GetUtcNow();
        var now = clock.UtcTicks;
        var response = new HeartbeatResponse();
        foreach (var id in ids)
        {
            if (Leases.TryGet(id, out var lease) && lease.TryRenew(now))
            {
                response.RenewedIds.Add(id);
                if (store.Shared) _renewed[id] = now;
                continue;
            }
            // One read of the store for what follows: a shared store may know it alive; any store knows it ended.
            var stored = store.Shared || lease is null ? store.Get(id) : null;
            if (store.Shared && stored is { State: Session.Types.State.Active } live && LiveElsewhere(id, live, lease, now) is { } ttl)
            {
                // Registered on another replica before this one caught up, or renewed there while this one's copy of
                // the lease ran out: its lease goes on from here.
                Leases.Add(id, ttl, clock);
                response.RenewedIds.Add(id);
                _renewed[id] = now;
            }
            else if (lease is not null || stored is not null) response.ExpiredIds.Add(id);
            else response.UnknownIds.Add(id);
        }
        return response;
    }

    // ---- Several replicas on one store ----

    /// <summary>On a shared store, whether an ACTIVE session whose lease is missing or ran out here is alive by what the
    /// other replicas stored: its latest heartbeat (registration, renewals stored by any replica, this one's)
    /// younger than its ttl. Its ttl if so. A renewal made elsewhere in the last HeartbeatFlushInterval is not seen yet.</summary>
    private TimeSpan? LiveElsewhere(string id, Session live, LeaseTable.Lease? lease, long now)
    {
        var ttl = live.Ttl.ToTimeSpan();
        var beat = live.HeartbeatTime?.ToDateTimeOffset().UtcTicks ?? 0;
        if (lease is not null) beat = Math.Max(beat, lease.Read().Heartbeat);
        if (store.Heartbeats([id]).TryGetValue(id, out var stored)) beat = Math.Max(beat, stored);
        return beat + ttl.Ticks > now ? ttl : null;
    }

    /// <summary>Renewals made here since they were last stored for the other replicas (session id, UTC ticks).</summary>
    private System.Collections.Concurrent.ConcurrentDictionary<string, long> _renewed = new(StringComparer.Ordinal);

    /// <summary>How late the sweeper may see a renewal made on another replica (stored every HeartbeatFlushInterval):
    /// it expires a lease only this long after it ran out. Zero on a store of one.</summary>
    public TimeSpan ExpiryGrace => store.Shared ? 2 * _options.HeartbeatFlushInterval : TimeSpan.Zero;

    /// <summary>Stores the renewals made here every HeartbeatFlushInterval, for the replica that sweeps.</summary>
    private async Task FlushHeartbeatsAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            await Task.Delay(_options.HeartbeatFlushInterval, time, stoppingToken);
            if (_renewed.IsEmpty) continue;
            var batch = Interlocked.Exchange(ref _renewed, new(StringComparer.Ordinal));
            try
            {
                store.SaveHeartbeats(batch);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Could not store {Count} lease renewals for the other replicas: {Error}", batch.Count, e.Message);
                foreach (var (id, beat) in batch) _renewed.AddOrUpdate(id, beat, (_, later) => Math.Max(later, beat));
            }
        }
    }

    /// <summary>Catches up with the other replicas' commits when they notify (and at least every 5 s).</summary>
    private async Task FollowOthersAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            await store.WaitForChangeAsync(TimeSpan.FromSeconds(5), stoppingToken);
            if (Interlocked.Exchange(ref _catchUpQueued, 1) == 0) _commands.Writer.TryWrite(new CatchUpCommand());
        }
    }

    private int _catchUpQueued;

    /// <summary>Applies the other replicas' events to this one's memory, in revision order; false when some were
    /// already pruned (this replica was too far behind), and then everything is loaded again.</summary>
    private bool CatchUp(List<SessionEvent> others)
    {
        if (others.Count == 0) return true;
        if (others[0].Revision != _revision + 1)
        {
            logger.LogWarning("This replica is behind beyond the stored events (at {Revision}, next stored {Next}): loading the store again", _revision, others[0].Revision);
            LoadMemory();
            return false;
        }
        foreach (var e in others)
        {
            var session = e.Session;
            _revision = e.Revision;
            var key = (session.Workload, session.Instance);
            if (session.State == Session.Types.State.Active)
            {
                _active[key] = session.Id;
                // The later of the event's heartbeat and a renewal made here meanwhile (a client may have renewed here
                // before this replica caught up).
                var beat = session.HeartbeatTime?.ToDateTimeOffset().UtcTicks ?? time.GetUtcNow().UtcTicks;
                if (Leases.TryGet(session.Id, out var known)) beat = Math.Max(beat, known.Read().Heartbeat);
                Leases.Add(session.Id, session.Ttl.ToTimeSpan(), new DateTimeOffset(beat, TimeSpan.Zero));
            }
            else
            {
                if (_active.TryGetValue(key, out var id) && id == session.Id) _active.Remove(key);
                Leases.Remove(session.Id);
            }
        }
        return true;
    }

    /// <summary>A live session's heartbeat and expiry are the lease's, not the last stored ones.</summary>
    private Session WithLease(Session session)
    {
        if (session.State == Session.Types.State.Active && Leases.TryGet(session.Id, out var lease))
        {
            var (heartbeat, expire) = lease.Read();
            session.HeartbeatTime = Timestamp.FromDateTimeOffset(new DateTimeOffset(heartbeat, TimeSpan.Zero));
            session.ExpireTime = Timestamp.FromDateTimeOffset(new DateTimeOffset(expire, TimeSpan.Zero));
        }
        return session;
    }

    // ---- Writes (through the queue) ----

    public Task<Session> RegisterAsync(RegisterSessionRequest request, CancellationToken cancellationToken) =>
        Enqueue(new RegisterCommand(request), cancellationToken);

    public Task<Session> EndAsync(string id, string reason, CancellationToken cancellationToken) =>
        Enqueue(new EndCommand(id, reason), cancellationToken);

    public Task<int> ExpireAsync(List<string> ids, CancellationToken cancellationToken) =>
        Enqueue(new ExpireCommand(ids), cancellationToken);

    /// <summary>Takes or renews the sweeper's leader lock and prunes old events, ended sessions and request ids.</summary>
    public Task<bool> MaintainAsync(string holder, CancellationToken cancellationToken) =>
        Enqueue(new MaintenanceCommand(holder, Release: false), cancellationToken);

    /// <summary>Gives the sweeper's leader lock up at shutdown, so another replica takes over at once.</summary>
    public Task<bool> ReleaseLeadershipAsync(string holder, CancellationToken cancellationToken) =>
        Enqueue(new MaintenanceCommand(holder, Release: true), cancellationToken);

    private async Task<T> Enqueue<T>(Command<T> command, CancellationToken cancellationToken)
    {
        if (!_commands.Writer.TryWrite(command))
            throw PlatformException.Unavailable("the registry is shutting down");
        // The write happens regardless of a caller that goes away: it is decided once queued.
        return await command.Result.Task.WaitAsync(cancellationToken);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var batch = new List<Command>(_options.MaxBatch);
        var events = new List<SessionEvent>();
        using var followers = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        var following = store.Shared
            ? Task.WhenAll(FollowOthersAsync(followers.Token), FlushHeartbeatsAsync(followers.Token))
            : Task.CompletedTask;
        try
        {
            while (await _commands.Reader.WaitToReadAsync(stoppingToken))
            {
                batch.Clear();
                events.Clear();
                while (batch.Count < _options.MaxBatch && _commands.Reader.TryRead(out var command)) batch.Add(command);
                Commit(batch, events);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            _commands.Writer.TryComplete();
            while (_commands.Reader.TryRead(out var command))
                command.Fail(PlatformException.Unavailable("the registry is shutting down"));
            await followers.CancelAsync();
            try
            {
                await following;
            }
            catch (OperationCanceledException)
            {
            }
            // The last renewals made here, for the replica that sweeps.
            if (store.Shared && !_renewed.IsEmpty)
            {
                try { store.SaveHeartbeats(_renewed); }
                catch (Exception e) when (e is not OperationCanceledException) { logger.LogWarning("Could not store the last lease renewals: {Error}", e.Message); }
            }
        }
    }

    private void Commit(List<Command> batch, List<SessionEvent> events)
    {
        var now = time.GetUtcNow();
        try
        {
            using (var transaction = store.BeginBatch())
            {
                // The other replicas' commits first (none on a store of one): this batch is decided on all of them,
                // and this replica's watchers get them before its own, in revision order.
                var others = transaction.CatchUp(_revision);
                if (CatchUp(others)) events.AddRange(others); // else loaded again, the hub with it
                foreach (var command in batch)
                {
                    try
                    {
                        command.Apply(this, transaction, now, events);
                    }
                    catch (PlatformException e)
                    {
                        command.Fail(e);
                    }
                }
                transaction.Commit();
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogError(e, "Registry store commit failed; {Count} writes are refused and the state is reloaded", batch.Count);
            foreach (var command in batch) command.Fail(PlatformException.Unavailable($"the registry could not store the change: {e.Message}"));
            LoadMemory();
            return;
        }

        Hub.Publish(events);
        foreach (var command in batch) command.Complete();
        Interlocked.Add(ref _committedWrites, batch.Count);
        Interlocked.Increment(ref _commits);
    }

    private SessionEvent Record(IStoreBatch transaction, Session session, SessionEvent.Types.Type type, List<SessionEvent> events)
    {
        session.Revision = ++_revision;
        transaction.Put(session);
        // The session is not changed after this (the writer works on fresh copies from the store), so the event,
        // the history and the caller's answer can share it.
        var sessionEvent = new SessionEvent { Type = type, Session = session, Revision = session.Revision };
        transaction.AppendEvent(sessionEvent);
        events.Add(sessionEvent);
        return sessionEvent;
    }

    private abstract class Command
    {
        public abstract void Apply(RegistryEngine engine, IStoreBatch transaction, DateTimeOffset now, List<SessionEvent> events);

        public abstract void Fail(Exception error);

        /// <summary>Answers the caller (after the commit).</summary>
        public abstract void Complete();
    }

    private abstract class Command<T> : Command
    {
        private T? _value;
        private bool _failed;

        public TaskCompletionSource<T> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        protected void SetResult(T value) => _value = value;

        public override void Fail(Exception error)
        {
            _failed = true;
            Result.TrySetException(error);
        }

        public override void Complete()
        {
            if (!_failed) Result.TrySetResult(_value!);
        }
    }

    private sealed class RegisterCommand(RegisterSessionRequest request) : Command<Session>
    {
        public override void Apply(RegistryEngine engine, IStoreBatch transaction, DateTimeOffset now, List<SessionEvent> events)
        {
            if (request.RequestId.Length > 0 &&
                (engine._requests.TryGetValue(request.RequestId, out var prior) ? prior.SessionId : transaction.FindRequest(request.RequestId)) is { } priorId &&
                transaction.Get(priorId) is { } first)
            {
                SetResult(engine.WithLease(first));
                return;
            }

            var key = (request.Workload, request.Instance);
            var ttl = request.Ttl?.ToTimeSpan() ?? engine._options.DefaultTtl;
            Session session;
            if (engine._active.TryGetValue(key, out var id) && transaction.Get(id) is { } live)
            {
                session = engine.WithLease(live);
                if (Differs(session, request, ttl))
                {
                    session.Node = request.Node;
                    session.Pid = request.Pid;
                    session.Labels.Clear();
                    session.Labels.Add(request.Labels);
                    session.Attributes.Clear();
                    session.Attributes.Add(request.Attributes);
                    session.Ttl = Duration.FromTimeSpan(ttl);
                    session.HeartbeatTime = Timestamp.FromDateTimeOffset(now);
                    session.ExpireTime = Timestamp.FromDateTimeOffset(now + ttl);
                    engine.Leases.Add(session.Id, ttl, now);
                    engine.Record(transaction, session, SessionEvent.Types.Type.Updated, events);
                }
            }
            else
            {
                session = new Session
                {
                    Id = System.Ulid.NewUlid().ToString(),
                    Workload = request.Workload,
                    Instance = request.Instance,
                    Node = request.Node,
                    Pid = request.Pid,
                    State = Session.Types.State.Active,
                    Labels = { request.Labels },
                    Attributes = { request.Attributes },
                    Ttl = Duration.FromTimeSpan(ttl),
                    CreateTime = Timestamp.FromDateTimeOffset(now),
                    HeartbeatTime = Timestamp.FromDateTimeOffset(now),
                    ExpireTime = Timestamp.FromDateTimeOffset(now + ttl),
                };
                engine._active[key] = session.Id;
                engine.Leases.Add(session.Id, ttl, now);
                engine.Record(transaction, session, SessionEvent.Types.Type.Created, events);
            }

            if (request.RequestId.Length > 0)
            {
                engine._requests[request.RequestId] = (session.Id, now);
                transaction.PutRequest(request.RequestId, session.Id, now);
            }
            SetResult(session);
        }

        private static bool Differs(Session session, RegisterSessionRequest request, TimeSpan ttl) =>
            session.Node != request.Node || session.Pid != request.Pid || session.Ttl.ToTimeSpan() != ttl ||
            !session.Labels.Equals(request.Labels) || !session.Attributes.Equals(request.Attributes);
    }

    private sealed class EndCommand(string id, string reason) : Command<Session>
    {
        public override void Apply(RegistryEngine engine, IStoreBatch transaction, DateTimeOffset now, List<SessionEvent> events)
        {
            var session = transaction.Get(id) ?? throw PlatformException.NotFound("session", id);
            if (session.State != Session.Types.State.Active)
            {
                SetResult(session);
                return;
            }

            session = engine.WithLease(session);
            session.State = Session.Types.State.Ended;
            session.EndTime = Timestamp.FromDateTimeOffset(now);
            session.EndReason = reason.Length > 0 ? reason : "ended";
            engine._active.Remove((session.Workload, session.Instance));
            engine.Leases.Remove(session.Id);
            engine.Record(transaction, session, SessionEvent.Types.Type.Ended, events);
            SetResult(session);
        }
    }

    private sealed class ExpireCommand(List<string> ids) : Command<int>
    {
        public override void Apply(RegistryEngine engine, IStoreBatch transaction, DateTimeOffset now, List<SessionEvent> events)
        {
            var expired = 0;
            // Renewals made on other replicas: a later heartbeat there extends the lease here.
            foreach (var (id, beat) in transaction.Heartbeats(ids))
                if (engine.Leases.TryGet(id, out var renewed)) renewed.Extend(beat);
            var deadline = (now - engine.ExpiryGrace).UtcTicks;
            foreach (var id in ids)
            {
                if (!engine.Leases.TryGet(id, out var lease)) continue;
                var (heartbeat, expire) = lease.Read();
                if (expire > deadline) continue;
                var session = transaction.Get(id);
                engine.Leases.Remove(id);
                if (session is null || session.State != Session.Types.State.Active) continue;

                session.State = Session.Types.State.Expired;
                session.HeartbeatTime = Timestamp.FromDateTimeOffset(new DateTimeOffset(heartbeat, TimeSpan.Zero));
                session.ExpireTime = Timestamp.FromDateTimeOffset(new DateTimeOffset(expire, TimeSpan.Zero));
                session.EndTime = session.ExpireTime;
                session.EndReason = "lease expired";
                engine._active.Remove((session.Workload, session.Instance));
                engine.Record(transaction, session, SessionEvent.Types.Type.Expired, events);
                expired++;
            }
            SetResult(expired);
        }
    }

    /// <summary>Nothing but the catch-up every batch begins with: the other replicas' commits reach this one's memory
    /// and watchers.</summary>
    private sealed class CatchUpCommand : Command<bool>
    {
        public override void Apply(RegistryEngine engine, IStoreBatch transaction, DateTimeOffset now, List<SessionEvent> events)
        {
            Interlocked.Exchange(ref engine._catchUpQueued, 0);
            SetResult(true);
        }
    }

    private sealed class MaintenanceCommand(string holder, bool Release) : Command<bool>
    {
        public override void Apply(RegistryEngine engine, IStoreBatch transaction, DateTimeOffset now, List<SessionEvent> events)
        {
            if (Release)
            {
                transaction.ReleaseLeadership("sweeper", holder);
                SetResult(false);
                return;
            }

            var leader = transaction.TryAcquireLeadership("sweeper", holder, now, engine._options.LeaderLease);
            var horizon = now - engine._options.Retention;
            transaction.Prune(engine._revision - engine._options.WatchHistory, horizon, horizon);
            foreach (var old in engine._requests.Where(r => r.Value.Time < horizon).Select(r => r.Key).ToList())
                engine._requests.Remove(old);
            SetResult(leader);
        }
    }
}
