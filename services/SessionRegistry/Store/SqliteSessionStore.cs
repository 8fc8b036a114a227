using Google.Protobuf;
using Microsoft.Data.Sqlite;
using Platform.ServiceDefaults;
using Platform.Registry.V1;

namespace Platform.SessionRegistry.Store;

/// <summary>
/// SQLite in WAL mode with synchronous=FULL: a commit returns only once the write-ahead log is on disk, so every
/// acknowledged write survives a SIGKILL (and a power cut). Sessions and events are stored as protobuf blobs next
/// to the columns that are queried.
/// </summary>
public sealed class SqliteSessionStore : ISessionStore
{
    private const int ActiveState = (int)Session.Types.State.Active;
    private readonly string _connectionString;
    private readonly SqliteConnection _writer;
    private readonly SqliteCommand _putSession;
    private readonly SqliteCommand _putEvent;
    private readonly SqliteCommand _putRequest;
    private readonly SqliteCommand _getSession;

    public SqliteSessionStore(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = true,
            DefaultTimeout = 30,
        }.ToString();
        _writer = new SqliteConnection(_connectionString);
        _writer.Open();
        Execute(_writer, """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = FULL;
            PRAGMA busy_timeout = 10000;
            CREATE TABLE IF NOT EXISTS sessions (
                id TEXT PRIMARY KEY,
                workload TEXT NOT NULL,
                instance TEXT NOT NULL,
                state INTEGER NOT NULL,
                end_time INTEGER,
                data BLOB NOT NULL);
            CREATE INDEX IF NOT EXISTS sessions_workload ON sessions (workload, id);
            CREATE UNIQUE INDEX IF NOT EXISTS sessions_live_key ON sessions (workload, instance) WHERE state = 1;
            CREATE TABLE IF NOT EXISTS events (revision INTEGER PRIMARY KEY, data BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, time INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS leaders (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expire_time INTEGER NOT NULL);
            """);

        // The writer's statements, prepared once and reused by every batch.
        _putSession = _writer.Prepare("""
            INSERT INTO sessions (id, workload, instance, state, end_time, data) VALUES ($id, $workload, $instance, $state, $end, $data)
            ON CONFLICT (id) DO UPDATE SET state = excluded.state, end_time = excluded.end_time, data = excluded.data
            """, "$id", "$workload", "$instance", "$state", "$end", "$data");
        _putEvent = _writer.Prepare("INSERT INTO events (revision, data) VALUES ($revision, $data)", "$revision", "$data");
        _putRequest = _writer.Prepare("INSERT OR REPLACE INTO requests (request_id, session_id, time) VALUES ($rid, $sid, $time)", "$rid", "$sid", "$time");
        _getSession = _writer.Prepare("SELECT data FROM sessions WHERE id = $id", "$id");
    }

    private SqliteConnection OpenReader()
    {
        var connection = new SqliteConnection(_connectionString);
        connection.Open();
        return connection;
    }

    public StoreState Load(int eventHistory, DateTimeOffset requestsSince)
    {
        using var connection = OpenReader();
        long revision;
        using (var command = Command(connection, "SELECT COALESCE(MAX(revision), 0) FROM events"))
            revision = (long)command.ExecuteScalar()!;

        var active = new List<ActiveSession>();
        using (var command = Command(connection, "SELECT data FROM sessions WHERE state = 1"))
        using (var reader = command.ExecuteReader())
        {
            while (reader.Read())
            {
                var session = Session.Parser.ParseFrom((byte[])reader[0]);
                active.Add(new ActiveSession(session.Id, session.Workload, session.Instance, session.Ttl.ToTimeSpan()));
            }
        }

        var requests = new List<(string, string, DateTimeOffset)>();
        using (var command = Command(connection, "SELECT request_id, session_id, time FROM requests WHERE time >= $since"))
        {
            command.Parameters.AddWithValue("$since", requestsSince.ToUnixTimeMilliseconds());
            using var reader = command.ExecuteReader();
            while (reader.Read())
                requests.Add((reader.GetString(0), reader.GetString(1), DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(2))));
        }

        var events = EventsAfter(connection, Math.Max(0, revision - eventHistory), eventHistory);
        return new StoreState(revision, active, requests, events);
    }

    public IStoreBatch BeginBatch() => new Batch(this);

    public bool Shared => false;

    public Task WaitForChangeAsync(TimeSpan max, CancellationToken cancellationToken) => Task.Delay(Timeout.Infinite, cancellationToken);

    public void SaveHeartbeats(IReadOnlyCollection<KeyValuePair<string, long>> heartbeats)
    {
    }

    public Dictionary<string, long> Heartbeats(IReadOnlyCollection<string> ids) => [];

    public Session? Get(string id)
    {
        using var connection = OpenReader();
        return Get(connection, null, id);
    }

    public List<Session> List(string workload, Session.Types.State state, string afterId, int limit)
    {
        using var connection = OpenReader();
        var sql = "SELECT data FROM sessions WHERE id > $after"
                  + (workload.Length > 0 ? " AND workload = $workload" : "")
                  + (state != Session.Types.State.Unspecified ? " AND state = $state" : "")
                  + " ORDER BY id LIMIT $limit";
        using var command = Command(connection, sql);
        command.Parameters.AddWithValue("$after", afterId);
        command.Parameters.AddWithValue("$workload", workload);
        command.Parameters.AddWithValue("$state", (int)state);
        command.Parameters.AddWithValue("$limit", limit);
        using var reader = command.ExecuteReader();
        var sessions = new List<Session>();
        while (reader.Read()) sessions.Add(Session.Parser.ParseFrom((byte[])reader[0]));
        return sessions;
    }

    public List<SessionEvent> EventsAfter(long revision, int limit)
    {
        using var connection = OpenReader();
        return EventsAfter(connection, revision, limit);
    }

    private static List<SessionEvent> EventsAfter(SqliteConnection connection, long revision, int limit)
    {
        using var command = Command(connection, "SELECT data FROM events WHERE revision > $after ORDER BY revision LIMIT $limit");
        command.Parameters.AddWithValue("$after", revision);
        command.Parameters.AddWithValue("$limit", limit);
        using var reader = command.ExecuteReader();
        var events = new List<SessionEvent>();
        while (reader.Read()) events.Add(SessionEvent.Parser.ParseFrom((byte[])reader[0]));
        return events;
    }

    private static Session? Get(SqliteConnection connection, SqliteTransaction? transaction, string id)
    {
        using var command = Command(connection, "SELECT data FROM sessions WHERE id = $id", transaction);
        command.Parameters.AddWithValue("$id", id);
        return command.ExecuteScalar() is byte[] data ? Session.Parser.ParseFrom(data) : null;
    }

    private static SqliteCommand Command(SqliteConnection connection, string sql, SqliteTransaction? transaction = null)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        command.Transaction = transaction;
        return command;
    }

    private static void Execute(SqliteConnection connection, string sql, SqliteTransaction? transaction = null)
    {
        using var command = Command(connection, sql, transaction);
        command.ExecuteNonQuery();
    }

    public void Dispose()
    {
        foreach (var command in new[] { _putSession, _putEvent, _putRequest, _getSession }) command.Dispose();
        _writer.Dispose();
        SqliteConnection.ClearAllPools();
    }

    private sealed class Batch : IStoreBatch
    {
        private readonly SqliteSessionStore _store;
        private readonly SqliteConnection _connection;
        private readonly SqliteTransaction _transaction;

        public Batch(SqliteSessionStore store)
        {
            _store = store;
            _connection = store._writer;
            _transaction = _connection.BeginTransaction(deferred: false);
            foreach (var command in new[] { store._putSession, store._putEvent, store._putRequest, store._getSession })
                command.Transaction = _transaction;
        }

        public List<SessionEvent> CatchUp(long revision) => [];

        public string? FindRequest(string requestId) => null;

        public Dictionary<string, long> Heartbeats(IReadOnlyCollection<string> ids) => [];

        private SqliteCommand PutSessionCommand => _store._putSession;
        private SqliteCommand PutEventCommand => _store._putEvent;
        private SqliteCommand PutRequestCommand => _store._putRequest;

        public Session? Get(string id)
        {
            var get = _store._getSession;
            get.Parameters[0].Value = id;
            return get.ExecuteScalar() is byte[] data ? Session.Parser.ParseFrom(data) : null;
        }

        public void Put(Session session)
        {
            PutSessionCommand.Parameters[0].Value = session.Id;
            PutSessionCommand.Parameters[1].Value = session.Workload;
            PutSessionCommand.Parameters[2].Value = session.Instance;
            PutSessionCommand.Parameters[3].Value = (int)session.State;
            PutSessionCommand.Parameters[4].Value = session.EndTime is null ? DBNull.Value : session.EndTime.ToDateTimeOffset().ToUnixTimeMilliseconds();
            PutSessionCommand.Parameters[5].Value = session.ToByteArray();
            PutSessionCommand.ExecuteNonQuery();
        }

        public void AppendEvent(SessionEvent sessionEvent)
        {
            PutEventCommand.Parameters[0].Value = sessionEvent.Revision;
            PutEventCommand.Parameters[1].Value = sessionEvent.ToByteArray();
            PutEventCommand.ExecuteNonQuery();
        }

        public void PutRequest(string requestId, string sessionId, DateTimeOffset time)
        {
            PutRequestCommand.Parameters[0].Value = requestId;
            PutRequestCommand.Parameters[1].Value = sessionId;
            PutRequestCommand.Parameters[2].Value = time.ToUnixTimeMilliseconds();
            PutRequestCommand.ExecuteNonQuery();
        }

        public bool TryAcquireLeadership(string name, string holder, DateTimeOffset now, TimeSpan lease)
        {
            using var command = Command(_connection, """
                INSERT INTO leaders (name, holder, expire_time) VALUES ($name, $holder, $expire)
                ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expire_time = excluded.expire_time
                WHERE leaders.holder = excluded.holder OR leaders.expire_time < $now
                """, _transaction);
            command.Parameters.AddWithValue("$name", name);
            command.Parameters.AddWithValue("$holder", holder);
            command.Parameters.AddWithValue("$expire", (now + lease).ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$now", now.ToUnixTimeMilliseconds());
            return command.ExecuteNonQuery() == 1;
        }

        public void ReleaseLeadership(string name, string holder)
        {
            using var command = Command(_connection, "DELETE FROM leaders WHERE name = $name AND holder = $holder", _transaction);
            command.Parameters.AddWithValue("$name", name);
            command.Parameters.AddWithValue("$holder", holder);
            command.ExecuteNonQuery();
        }

        public void Prune(long eventsUpToRevision, DateTimeOffset endedBefore, DateTimeOffset requestsBefore)
        {
            using var command = Command(_connection, """
                DELETE FROM events WHERE revision <= $revision;
                DELETE FROM sessions WHERE state <> 1 AND end_time < $ended;
                DELETE FROM requests WHERE time < $requests;
                """, _transaction);
            command.Parameters.AddWithValue("$revision", eventsUpToRevision);
            command.Parameters.AddWithValue("$ended", endedBefore.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$requests", requestsBefore.ToUnixTimeMilliseconds());
            command.ExecuteNonQuery();
        }

        public void Commit() => _transaction.Commit();

        public void Dispose() => _transaction.Dispose();
    }
}
