using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Google.Protobuf;
using Microsoft.Data.Sqlite;
using Platform.Restarts;
using Platform.ServiceDefaults;
using Platform.Supervisor.V1;
using HistoryLines = System.Collections.Generic.IReadOnlyList<(long Generation, System.DateTimeOffset Time, string Event, string Detail)>;

namespace Platform.Supervisor;

/// <summary>A workload as stored: spec and status, the restart tracker's state (absolute times, so backoff and cool-off
/// clocks continue after a restart of the supervisor), and its lifecycle trace context.</summary>
public sealed record WorkloadRecord(Workload Workload, RestartState Restart, string LifecycleContext, string? PreviousAttempt);

/// <summary>
/// Workloads, their restart history and request ids in SQLite (WAL, synchronous=NORMAL: a commit survives a SIGKILL of
/// the supervisor). The generation of a start is written before the launch, so a start is never repeated under a new
/// number after a crash.
/// </summary>
public sealed class WorkloadStore : IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly Lock _lock = new();
    private long _revision;

    public WorkloadStore(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        _connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        _connection.Open();
        Execute("""
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = NORMAL;
            CREATE TABLE IF NOT EXISTS workloads (
                name TEXT PRIMARY KEY, data BLOB NOT NULL, restart TEXT NOT NULL, lifecycle TEXT NOT NULL,
                previous_attempt TEXT, revision INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS history (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, generation INTEGER NOT NULL, time TEXT NOT NULL,
                event TEXT NOT NULL, detail TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS history_by_name ON history (name, seq);
            CREATE TABLE IF NOT EXISTS request_ids (
                request_id TEXT PRIMARY KEY, name TEXT NOT NULL, response BLOB NOT NULL, time INTEGER NOT NULL);
            """);
        using var command = _connection.CreateCommand();
        command.CommandText = "SELECT COALESCE(MAX(revision), 0) FROM workloads";
        _revision = (long)command.ExecuteScalar()!;
        _putWorkload = _connection.Prepare("""
            INSERT INTO workloads (name, data, restart, lifecycle, previous_attempt, revision)
            VALUES ($name, $data, $restart, $lifecycle, $previous, $revision)
            ON CONFLICT (name) DO UPDATE SET data = excluded.data, restart = excluded.restart,
                lifecycle = excluded.lifecycle, previous_attempt = excluded.previous_attempt, revision = excluded.revision
            """, "$name", "$data", "$restart", "$lifecycle", "$previous", "$revision");
        _putHistory = _connection.Prepare("INSERT INTO history (name, generation, time, event, detail) VALUES ($n, $g, $t, $e, $d)", "$n", "$g", "$t", "$e", "$d");
        _puts = new(_lock, batch => _connection.InTransaction([_putWorkload, _putHistory], () =>
        {
            foreach (var (record, history) in batch) PutLocked(record, history);
        }));
    }

    // The statements of every Put, prepared once (SQLite parses and plans them once, not at each write) and run under
    // the store's lock by the group commit.
    private readonly SqliteCommand _putWorkload, _putHistory;

    /// <summary>The next revision (a workload's revision grows with every stored change).</summary>
    public long NextRevision() => Interlocked.Increment(ref _revision);

    private readonly GroupCommit<(WorkloadRecord Record, HistoryLines? History)> _puts;

    /// <summary>Puts waiting for a commit right now.</summary>
    internal int Waiting => _puts.Waiting;

    /// <summary>Puts in the commit under way right now.</summary>
    internal int Committing => _puts.Committing;

    /// <summary>Transactions committed by Put since the start (a group commit makes one of several Puts).</summary>
    public int Commits => _puts.Commits;

    /// <summary>
    /// Stores a workload and, in the same transaction, lines of its history; returns once committed. Puts made at the
    /// same time share one transaction (<see cref="GroupCommit{T}"/>, as the registry's), so a burst of applies costs a
    /// few commits rather than one each.
    /// </summary>
    public void Put(WorkloadRecord record, HistoryLines? history = null) => _puts.Write((record, history));

    private void PutLocked(WorkloadRecord record, HistoryLines? history)
    {
        foreach (var (generation, time, what, detail) in history ?? [])
            _putHistory.Run(record.Workload.Name, generation, time.ToString("O", CultureInfo.InvariantCulture), what, detail);
        _putWorkload.Run(record.Workload.Name, record.Workload.ToByteArray(), Serialize(record.Restart), record.LifecycleContext,
            (object?)record.PreviousAttempt ?? DBNull.Value, record.Workload.Revision);
    }

    public void Delete(string name)
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "DELETE FROM workloads WHERE name = $name; DELETE FROM history WHERE name = $name";
            command.Parameters.AddWithValue("$name", name);
            command.ExecuteNonQuery();
        }
    }

    public List<WorkloadRecord> LoadAll()
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT data, restart, lifecycle, previous_attempt FROM workloads ORDER BY name";
            using var reader = command.ExecuteReader();
            var records = new List<WorkloadRecord>();
            while (reader.Read())
                records.Add(new WorkloadRecord(Workload.Parser.ParseFrom((byte[])reader[0]), Deserialize(reader.GetString(1)), reader.GetString(2),
                    reader.IsDBNull(3) ? null : reader.GetString(3)));
            return records;
        }
    }

    /// <summary>Up to <paramref name="limit"/> lines of a workload's history, newest first, older than sequence
    /// <paramref name="before"/> (0: from the newest).</summary>
    public List<HistoryEntry> History(string name, long before, int limit)
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = """
                SELECT seq, generation, time, event, detail FROM history
                WHERE name = $name AND ($before = 0 OR seq < $before) ORDER BY seq DESC LIMIT $limit
                """;
            command.Parameters.AddWithValue("$name", name);
            command.Parameters.AddWithValue("$before", before);
            command.Parameters.AddWithValue("$limit", limit);
            using var reader = command.ExecuteReader();
            var lines = new List<HistoryEntry>();
            while (reader.Read())
                lines.Add(new HistoryEntry
                {
                    Sequence = reader.GetInt64(0),
                    Generation = reader.GetInt64(1),
                    Time = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(DateTimeOffset.Parse(reader.GetString(2), CultureInfo.InvariantCulture)),
                    Event = reader.GetString(3),
                    Detail = reader.GetString(4),
                });
            return lines;
        }
    }

    /// <summary>One line of a workload's history (started, exited, stopped, adopted, launch-failed); the caller holds
    /// the lock and the transaction.</summary>
    /// <summary>The first answer to <paramref name="requestId"/>, if it was given within a day.</summary>
    public Workload? Answered(string requestId, DateTimeOffset now)
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT response FROM request_ids WHERE request_id = $id AND time >= $old";
            command.Parameters.AddWithValue("$old", (now - TimeSpan.FromDays(1)).UtcTicks);
            command.Parameters.AddWithValue("$id", requestId);
            return command.ExecuteScalar() is byte[] bytes ? Workload.Parser.ParseFrom(bytes) : null;
        }
    }

    public void Answer(string requestId, Workload response, DateTimeOffset now)
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            // Ids older than a day are pruned here, on the write path, not on every lookup.
            command.CommandText = """
                DELETE FROM request_ids WHERE time < $old;
                INSERT OR IGNORE INTO request_ids (request_id, name, response, time) VALUES ($id, $n, $r, $t)
                """;
            command.Parameters.AddWithValue("$old", (now - TimeSpan.FromDays(1)).UtcTicks);
            command.Parameters.AddWithValue("$id", requestId);
            command.Parameters.AddWithValue("$n", response.Name);
            command.Parameters.AddWithValue("$r", response.ToByteArray());
            command.Parameters.AddWithValue("$t", now.UtcTicks);
            command.ExecuteNonQuery();
        }
    }

    /// <summary>The restart tracker's state as stored: versioned JSON (source-generated, so AOT-safe).</summary>
    internal static string Serialize(RestartState s) =>
        JsonSerializer.Serialize(new StoredRestartState(StoredRestartState.CurrentVersion, s), WorkloadStoreJson.Default.StoredRestartState);

    internal static RestartState Deserialize(string text)
    {
        if (!text.StartsWith('{')) return DeserializeLegacy(text);
        var stored = JsonSerializer.Deserialize(text, WorkloadStoreJson.Default.StoredRestartState)
            ?? throw new InvalidDataException("a stored restart state is null");
        if (stored.Version != StoredRestartState.CurrentVersion)
            throw new InvalidDataException($"a stored restart state has version {stored.Version}; this supervisor reads version {StoredRestartState.CurrentVersion}");
        return stored.Restart;
    }

    /// <summary>The positional format of supervisor.db files written before version 1 (read, never written).</summary>
    private static RestartState DeserializeLegacy(string text)
    {
        var f = text.Split(';');
        static DateTimeOffset? Time(string t) => t.Length == 0 ? null : new DateTimeOffset(long.Parse(t, CultureInfo.InvariantCulture), TimeSpan.Zero);
        return new RestartState(
            (RestartPhase)int.Parse(f[0], CultureInfo.InvariantCulture),
            int.Parse(f[1], CultureInfo.InvariantCulture),
            f[2].Length == 0 ? [] : [.. f[2].Split(',').Select(t => Time(t)!.Value)],
            Time(f[3]),
            Time(f[4]),
            long.Parse(f[5], CultureInfo.InvariantCulture),
            f[6] == "1");
    }

    private void Execute(string sql)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _putWorkload.Dispose();
            _putHistory.Dispose();
            _connection.Dispose();
        }
    }
}

/// <summary>The stored form of a workload's <see cref="RestartState"/>, with the version of its format.</summary>
internal sealed record StoredRestartState(int Version, RestartState Restart)
{
    public const int CurrentVersion = 1;
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, UseStringEnumConverter = true)]
[JsonSerializable(typeof(StoredRestartState))]
internal sealed partial class WorkloadStoreJson : JsonSerializerContext;
