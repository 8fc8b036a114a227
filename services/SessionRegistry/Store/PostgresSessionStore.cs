using Google.Protobuf;
using Npgsql;
using NpgsqlTypes;
using Platform.Registry.V1;

namespace Platform.SessionRegistry.Store;

/// <summary>
/// PostgreSQL behind the same interface as <see cref="SqliteSessionStore"/>, chosen by a connection string
/// (<c>ConnectionStrings:registry-store</c>). The schema is SQLite's: sessions and events as protobuf blobs next to
/// the columns that are queried, the partial unique index that keeps one live session per (workload, instance).
/// A batch is one transaction on the writer's own connection; a commit returns once PostgreSQL has flushed its WAL
/// (synchronous_commit on, the server's default), so an acknowledged write survives a SIGKILL of the registry and of
/// the database. Reads take pooled connections of their own. The Npgsql "slim" data source: no reflection, so the
/// registry stays Native AOT-compatible.
/// Several registry replicas may share one database: every batch takes one advisory lock and first reads the events
/// the others committed (<see cref="IStoreBatch.CatchUp"/>), so writes are serialised across replicas and each
/// replica's memory (live keys, leases, revision, its watchers' stream) follows the others'; a commit NOTIFYs them.
/// Lease renewals go to a heartbeats table, which the sweeping replica reads before it expires a session.
/// </summary>
public sealed class PostgresSessionStore : ISessionStore
{
    private const int ActiveState = (int)Session.Types.State.Active;
    /// <summary>The transaction-scoped advisory lock every batch takes: the replicas' writes are serialised, so revisions
    /// are global and gapless and the live-key check sees every replica's sessions.</summary>
    private const long WriterLock = 7262310002;
    private const string Channel = "platform_registry";
    private readonly NpgsqlDataSource _source;
    private NpgsqlConnection? _listener;
    /// <summary>This replica's name in its notifications: it does not wake for its own commits.</summary>
    private readonly string _replica = Guid.NewGuid().ToString("N");
    private volatile bool _othersCommitted;
    private readonly Lock _writerLock = new();
    private NpgsqlConnection? _writer;

    public PostgresSessionStore(string connectionString)
    {
        var builder = new NpgsqlSlimDataSourceBuilder(connectionString);
        builder.EnableArrays();
        _source = builder.Build();
        using var connection = _source.OpenConnection();
        // Several replicas may create the schema at once: one at a time (a transaction-scoped advisory lock).
        using var transaction = connection.BeginTransaction();
        Execute(connection, transaction, "SELECT pg_advisory_xact_lock(7262310001)");
        Execute(connection, transaction, $"""
            CREATE TABLE IF NOT EXISTS sessions (
                id TEXT COLLATE "C" PRIMARY KEY,
                workload TEXT NOT NULL,
                instance TEXT NOT NULL,
                state INTEGER NOT NULL,
                end_time BIGINT,
                data BYTEA NOT NULL);
            CREATE INDEX IF NOT EXISTS sessions_workload ON sessions (workload, id);
            CREATE UNIQUE INDEX IF NOT EXISTS sessions_live_key ON sessions (workload, instance) WHERE state = {ActiveState};
            CREATE TABLE IF NOT EXISTS events (revision BIGINT PRIMARY KEY, data BYTEA NOT NULL);
            CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, time BIGINT NOT NULL);
            CREATE TABLE IF NOT EXISTS leaders (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expire_time BIGINT NOT NULL);
            CREATE TABLE IF NOT EXISTS heartbeats (id TEXT COLLATE "C" PRIMARY KEY, heartbeat BIGINT NOT NULL);
            """);
        transaction.Commit();
    }

    public StoreState Load(int eventHistory, DateTimeOffset requestsSince)
    {
        using var connection = _source.OpenConnection();
        long revision;
        using (var command = Command(connection, "SELECT COALESCE(MAX(revision), 0) FROM events"))
            revision = (long)command.ExecuteScalar()!;

        var active = new List<ActiveSession>();
        using (var command = Command(connection, $"SELECT data FROM sessions WHERE state = {ActiveState}"))
        using (var reader = command.ExecuteReader())
        {
            while (reader.Read())
            {
                var session = Session.Parser.ParseFrom((byte[])reader[0]);
                active.Add(new ActiveSession(session.Id, session.Workload, session.Instance, session.Ttl.ToTimeSpan()));
            }
        }

        var requests = new List<(string, string, DateTimeOffset)>();
        using (var command = Command(connection, "SELECT request_id, session_id, time FROM requests WHERE time >= @since"))
        {
            command.Parameters.AddWithValue("since", requestsSince.ToUnixTimeMilliseconds());
            using var reader = command.ExecuteReader();
            while (reader.Read())
                requests.Add((reader.GetString(0), reader.GetString(1), DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(2))));
        }

        var events = EventsAfter(connection, Math.Max(0, revision - eventHistory), eventHistory);
        return new StoreState(revision, active, requests, events);
    }

    /// <summary>A batch on the writer's connection, opened again when the last one broke (a database restart).</summary>
    public IStoreBatch BeginBatch()
    {
        lock (_writerLock)
        {
            if (_writer is not { State: System.Data.ConnectionState.Open })
            {
                _writer?.Dispose();
                _writer = _source.OpenConnection();
            }
            return new Batch(_writer, _replica);
        }
    }

    public Session? Get(string id)
    {
        using var connection = _source.OpenConnection();
        return Get(connection, null, id);
    }

    public bool Shared => true;

    /// <summary>LISTEN on a connection of its own; a notification, the time limit, or a broken connection (opened again
    /// next time, after a pause) ends the wait.</summary>
    public async Task WaitForChangeAsync(TimeSpan max, CancellationToken cancellationToken)
    {
        try
        {
            if (_listener is not { State: System.Data.ConnectionState.Open })
            {
                _listener?.Dispose();
                _listener = await _source.OpenConnectionAsync(cancellationToken);
                _listener.Notification += (_, e) =>
                {
                    if (e.Payload != _replica) _othersCommitted = true;
                };
                await using var listen = new NpgsqlCommand($"LISTEN {Channel}", _listener);
                await listen.ExecuteNonQueryAsync(cancellationToken);
            }
            var until = DateTime.UtcNow + max;
            while (!_othersCommitted && DateTime.UtcNow < until)
                await _listener.WaitAsync(until - DateTime.UtcNow, cancellationToken);
            _othersCommitted = false;
        }
        catch (Exception e) when (e is NpgsqlException or System.IO.IOException or TimeoutException)
        {
            _listener?.Dispose();
            _listener = null;
            await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken);
        }
    }

    public Dictionary<string, long> Heartbeats(IReadOnlyCollection<string> ids)
    {
        using var connection = _source.OpenConnection();
        return ReadHeartbeats(connection, null, ids);
    }

    private static Dictionary<string, long> ReadHeartbeats(NpgsqlConnection connection, NpgsqlTransaction? transaction, IReadOnlyCollection<string> ids)
    {
        var result = new Dictionary<string, long>(StringComparer.Ordinal);
        if (ids.Count == 0) return result;
        using var command = Command(connection, "SELECT id, heartbeat FROM heartbeats WHERE id = ANY(@ids)", transaction);
        command.Parameters.Add(new NpgsqlParameter("ids", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = ids.ToArray() });
        using var reader = command.ExecuteReader();
        while (reader.Read()) result[reader.GetString(0)] = reader.GetInt64(1);
        return result;
    }

    public void SaveHeartbeats(IReadOnlyCollection<KeyValuePair<string, long>> heartbeats)
    {
        if (heartbeats.Count == 0) return;
        using var connection = _source.OpenConnection();
        using var command = Command(connection, """
            INSERT INTO heartbeats (id, heartbeat) SELECT * FROM unnest(@ids, @beats)
            ON CONFLICT (id) DO UPDATE SET heartbeat = GREATEST(heartbeats.heartbeat, excluded.heartbeat)
            """);
        command.Parameters.Add(new NpgsqlParameter("ids", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = heartbeats.Select(h => h.Key).ToArray() });
        command.Parameters.Add(new NpgsqlParameter("beats", NpgsqlDbType.Array | NpgsqlDbType.Bigint) { Value = heartbeats.Select(h => h.Value).ToArray() });
        command.ExecuteNonQuery();
    }

    public List<Session> List(string workload, Session.Types.State state, string afterId, int limit)
    {
        using var connection = _source.OpenConnection();
        // The id column is COLLATE "C": ids compare byte by byte, as in SQLite, whatever the database's collation.
        var sql = "SELECT data FROM sessions WHERE id > @after"
                  + (workload.Length > 0 ? " AND workload = @workload" : "")
                  + (state != Session.Types.State.Unspecified ? " AND state = @state" : "")
                  + " ORDER BY id LIMIT @limit";
        using var command = Command(connection, sql);
        command.Parameters.AddWithValue("after", afterId);
        command.Parameters.AddWithValue("workload", workload);
        command.Parameters.AddWithValue("state", (int)state);
        command.Parameters.AddWithValue("limit", limit);
        using var reader = command.ExecuteReader();
        var sessions = new List<Session>();
        while (reader.Read()) sessions.Add(Session.Parser.ParseFrom((byte[])reader[0]));
        return sessions;
    }

    public List<SessionEvent> EventsAfter(long revision, int limit)
    {
        using var connection = _source.OpenConnection();
        return EventsAfter(connection, revision, limit);
    }

    private static List<SessionEvent> EventsAfter(NpgsqlConnection connection, long revision, int limit)
    {
        using var command = Command(connection, "SELECT data FROM events WHERE revision > @after ORDER BY revision LIMIT @limit");
        command.Parameters.AddWithValue("after", revision);
        command.Parameters.AddWithValue("limit", limit);
        using var reader = command.ExecuteReader();
        var events = new List<SessionEvent>();
        while (reader.Read()) events.Add(SessionEvent.Parser.ParseFrom((byte[])reader[0]));
        return events;
    }

    private static Session? Get(NpgsqlConnection connection, NpgsqlTransaction? transaction, string id)
    {
        using var command = Command(connection, "SELECT data FROM sessions WHERE id = @id", transaction);
        command.Parameters.AddWithValue("id", id);
        return command.ExecuteScalar() is byte[] data ? Session.Parser.ParseFrom(data) : null;
    }

    private static NpgsqlCommand Command(NpgsqlConnection connection, string sql, NpgsqlTransaction? transaction = null) =>
        new(sql, connection, transaction);

    private static void Execute(NpgsqlConnection connection, NpgsqlTransaction? transaction, string sql)
    {
        using var command = Command(connection, sql, transaction);
        command.ExecuteNonQuery();
    }

    public void Dispose()
    {
        lock (_writerLock) _writer?.Dispose();
        _listener?.Dispose();
        _source.Dispose();
    }

    /// <summary>
    /// One transaction. Writes wait in an <see cref="NpgsqlBatch"/> and go to the server together, before the next read
    /// of this transaction (reads see its own writes) or with the commit: a batch of a hundred registrations is a few
    /// round trips, not three hundred.
    /// </summary>
    private sealed class Batch : IStoreBatch
    {
        private readonly NpgsqlConnection _connection;
        private readonly NpgsqlTransaction _transaction;
        private readonly NpgsqlBatch _pending;
        private readonly string _replica;
        private bool _changed;

        public Batch(NpgsqlConnection connection, string replica)
        {
            _connection = connection;
            _replica = replica;
            _transaction = connection.BeginTransaction();
            _pending = new NpgsqlBatch(connection, _transaction);
        }

        private void Write(string sql, params NpgsqlParameter[] parameters)
        {
            var command = new NpgsqlBatchCommand(sql);
            command.Parameters.AddRange(parameters);
            _pending.BatchCommands.Add(command);
        }

        /// <summary>Sends the writes waiting so far.</summary>
        private void Flush()
        {
            if (_pending.BatchCommands.Count == 0) return;
            _pending.ExecuteNonQuery();
            _pending.BatchCommands.Clear();
        }

        /// <summary>The writer lock and the others' events in one round trip.</summary>
        public List<SessionEvent> CatchUp(long revision)
        {
            Flush();
            using var batch = new NpgsqlBatch(_connection, _transaction);
            batch.BatchCommands.Add(new NpgsqlBatchCommand($"SELECT pg_advisory_xact_lock({WriterLock})"));
            var events = new NpgsqlBatchCommand("SELECT data FROM events WHERE revision > @after ORDER BY revision");
            events.Parameters.Add(new NpgsqlParameter("after", revision));
            batch.BatchCommands.Add(events);
            using var reader = batch.ExecuteReader();
            reader.NextResult();
            var result = new List<SessionEvent>();
            while (reader.Read()) result.Add(SessionEvent.Parser.ParseFrom((byte[])reader[0]));
            return result;
        }

        public string? FindRequest(string requestId)
        {
            Flush();
            using var command = Command(_connection, "SELECT session_id FROM requests WHERE request_id = @rid", _transaction);
            command.Parameters.AddWithValue("rid", requestId);
            return command.ExecuteScalar() as string;
        }

        public Dictionary<string, long> Heartbeats(IReadOnlyCollection<string> ids)
        {
            Flush();
            return ReadHeartbeats(_connection, _transaction, ids);
        }

        public Session? Get(string id)
        {
            Flush();
            return PostgresSessionStore.Get(_connection, _transaction, id);
        }

        public void Put(Session session) =>
            Write("""
                INSERT INTO sessions (id, workload, instance, state, end_time, data) VALUES (@id, @workload, @instance, @state, @end, @data)
                ON CONFLICT (id) DO UPDATE SET state = excluded.state, end_time = excluded.end_time, data = excluded.data
                """,
                new NpgsqlParameter("id", session.Id),
                new NpgsqlParameter("workload", session.Workload),
                new NpgsqlParameter("instance", session.Instance),
                new NpgsqlParameter("state", (int)session.State),
                new NpgsqlParameter("end", NpgsqlDbType.Bigint) { Value = session.EndTime is null ? DBNull.Value : session.EndTime.ToDateTimeOffset().ToUnixTimeMilliseconds() },
                new NpgsqlParameter("data", session.ToByteArray()));

        public void AppendEvent(SessionEvent sessionEvent)
        {
            _changed = true;
            Write("INSERT INTO events (revision, data) VALUES (@revision, @data)",
                new NpgsqlParameter("revision", sessionEvent.Revision),
                new NpgsqlParameter("data", sessionEvent.ToByteArray()));
        }

        public void PutRequest(string requestId, string sessionId, DateTimeOffset time) =>
            Write("""
                INSERT INTO requests (request_id, session_id, time) VALUES (@rid, @sid, @time)
                ON CONFLICT (request_id) DO UPDATE SET session_id = excluded.session_id, time = excluded.time
                """,
                new NpgsqlParameter("rid", requestId),
                new NpgsqlParameter("sid", sessionId),
                new NpgsqlParameter("time", time.ToUnixTimeMilliseconds()));

        public bool TryAcquireLeadership(string name, string holder, DateTimeOffset now, TimeSpan lease)
        {
            Flush();
            using var command = Command(_connection, """
                INSERT INTO leaders (name, holder, expire_time) VALUES (@name, @holder, @expire)
                ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expire_time = excluded.expire_time
                WHERE leaders.holder = excluded.holder OR leaders.expire_time < @now
                """, _transaction);
            command.Parameters.AddWithValue("name", name);
            command.Parameters.AddWithValue("holder", holder);
            command.Parameters.AddWithValue("expire", (now + lease).ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("now", now.ToUnixTimeMilliseconds());
            return command.ExecuteNonQuery() == 1;
        }

        public void ReleaseLeadership(string name, string holder) =>
            Write("DELETE FROM leaders WHERE name = @name AND holder = @holder", new NpgsqlParameter("name", name), new NpgsqlParameter("holder", holder));

        public void Prune(long eventsUpToRevision, DateTimeOffset endedBefore, DateTimeOffset requestsBefore)
        {
            Write("DELETE FROM events WHERE revision <= @revision", new NpgsqlParameter("revision", eventsUpToRevision));
            Write($"DELETE FROM sessions WHERE state <> {ActiveState} AND end_time < @ended", new NpgsqlParameter("ended", endedBefore.ToUnixTimeMilliseconds()));
            Write("DELETE FROM requests WHERE time < @requests", new NpgsqlParameter("requests", requestsBefore.ToUnixTimeMilliseconds()));
            Write($"DELETE FROM heartbeats h WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = h.id AND s.state = {ActiveState})");
        }

        /// <summary>Sends what waits, tells the other replicas when it changed sessions (a notification is delivered with
        /// the commit, and only if it succeeds; named by this replica, which does not wake for it) and commits.</summary>
        public void Commit()
        {
            if (_changed) Write($"SELECT pg_notify('{Channel}', @replica)", new NpgsqlParameter("replica", _replica));
            Flush();
            _transaction.Commit();
        }

        public void Dispose()
        {
            _pending.Dispose();
            _transaction.Dispose();
        }
    }
}
