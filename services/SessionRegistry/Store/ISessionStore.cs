using Platform.Registry.V1;

namespace Platform.SessionRegistry.Store;

/// <summary>
/// The durable store behind the registry: SQLite (one registry) or PostgreSQL (one or several replicas). All writes go through one <see cref="IStoreBatch"/> at a time, committed as one transaction: the
/// registry's writer groups concurrent requests into a batch, so they share one commit (one fsync).
/// </summary>
public interface ISessionStore : IDisposable
{
    /// <summary>Reads what the registry keeps in memory: the revision, live sessions, request ids and recent events.</summary>
    StoreState Load(int eventHistory, DateTimeOffset requestsSince);

    /// <summary>Starts a write transaction; reads through it see its own writes.</summary>
    IStoreBatch BeginBatch();

    /// <summary>One session as last committed; null if unknown.</summary>
    Session? Get(string id);

    /// <summary>Sessions with an id after <paramref name="afterId"/>, in id order, filtered by workload and state.</summary>
    List<Session> List(string workload, Session.Types.State state, string afterId, int limit);

    /// <summary>Events after a revision, in order (for watchers resuming beyond what memory holds).</summary>
    List<SessionEvent> EventsAfter(long revision, int limit);

    /// <summary>Several registries may write to this store at once (PostgreSQL): each catches up with the others'
    /// events at every batch, and lease renewals are shared through it. False (SQLite): this process is the only writer
    /// and its memory is the whole truth.</summary>
    bool Shared { get; }

    /// <summary>Completes when another registry committed something (or after <paramref name="max"/>, or never for a
    /// store that is not shared).</summary>
    Task WaitForChangeAsync(TimeSpan max, CancellationToken cancellationToken);

    /// <summary>Stores lease renewals made here (session id, heartbeat in UTC ticks) for the other registries' sweeper;
    /// a later heartbeat already stored is kept.</summary>
    void SaveHeartbeats(IReadOnlyCollection<KeyValuePair<string, long>> heartbeats);

    /// <summary>The heartbeats stored for these sessions by any replica (UTC ticks); none on a store that is not shared.</summary>
    Dictionary<string, long> Heartbeats(IReadOnlyCollection<string> ids);
}

public interface IStoreBatch : IDisposable
{
    /// <summary>Serialises this batch with every other registry's on a shared store, and returns the events they
    /// committed after <paramref name="revision"/>, in order (none on a store that is not shared).</summary>
    List<SessionEvent> CatchUp(long revision);

    /// <summary>The session a request id registered, if another registry stored it (null on a store that is not shared:
    /// memory has them all).</summary>
    string? FindRequest(string requestId);

    /// <summary>The heartbeats other registries stored for these sessions (UTC ticks), where later than none.</summary>
    Dictionary<string, long> Heartbeats(IReadOnlyCollection<string> ids);

    Session? Get(string id);

    void Put(Session session);

    void AppendEvent(SessionEvent sessionEvent);

    void PutRequest(string requestId, string sessionId, DateTimeOffset time);

    /// <summary>Takes or renews the named leader lock for <paramref name="holder"/> if it is free, expired or already held.</summary>
    bool TryAcquireLeadership(string name, string holder, DateTimeOffset now, TimeSpan lease);

    /// <summary>Gives the named leader lock up, if <paramref name="holder"/> holds it.</summary>
    void ReleaseLeadership(string name, string holder);

    /// <summary>Drops events at or before a revision, sessions that ended before a time, and old request ids.</summary>
    void Prune(long eventsUpToRevision, DateTimeOffset endedBefore, DateTimeOffset requestsBefore);

    /// <summary>Makes every write of the batch durable (one transaction commit).</summary>
    void Commit();
}

/// <summary>A live session's lease, as loaded at start-up.</summary>
public sealed record ActiveSession(string Id, string Workload, string Instance, TimeSpan Ttl);

public sealed record StoreState(
    long Revision,
    List<ActiveSession> Active,
    List<(string RequestId, string SessionId, DateTimeOffset Time)> Requests,
    List<SessionEvent> RecentEvents);
