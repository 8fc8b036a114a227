using Google.Protobuf;
using Microsoft.Data.Sqlite;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.ServiceDefaults;

namespace Platform.Launcher;

/// <summary>An instance as persisted: the proto plus what re-adoption needs (identity, boot, grace, log directory).</summary>
public sealed record InstanceRecord(Instance Instance, ProcessIdentity Identity, string BootId, TimeSpan StopGrace, string LogDirectory, string RequestId);

/// <summary>
/// Instance records in SQLite in the launcher's data directory, so that a launcher that is SIGKILLed and started
/// again knows which children are its own. WAL with synchronous=NORMAL: a commit survives the process being killed
/// (the write is in the OS before the call returns); it may not survive a power cut, but neither do the children,
/// and after a reboot the boot id tells every old record apart. No fsync per launch, so 300 launches take no 300 fsyncs.
/// </summary>
public sealed class InstanceStore : IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly Lock _lock = new();

    public InstanceStore(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        _connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        _connection.Open();
        using var command = _connection.CreateCommand();
        command.CommandText = """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = NORMAL;
            CREATE TABLE IF NOT EXISTS instances (
                id TEXT PRIMARY KEY, state INTEGER NOT NULL, data BLOB NOT NULL, pid INTEGER NOT NULL,
                start_ticks INTEGER NOT NULL, boot_id TEXT NOT NULL, grace_ms INTEGER NOT NULL, log_dir TEXT NOT NULL,
                request_id TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS session_outbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, kind TEXT NOT NULL, payload BLOB NOT NULL);
            """;
        command.ExecuteNonQuery();
        _put = _connection.Prepare("""
            INSERT INTO instances (id, state, data, pid, start_ticks, boot_id, grace_ms, log_dir, request_id)
            VALUES ($id, $state, $data, $pid, $start, $boot, $grace, $log, $rid)
            ON CONFLICT (id) DO UPDATE SET state = excluded.state, data = excluded.data
            """, "$id", "$state", "$data", "$pid", "$start", "$boot", "$grace", "$log", "$rid");
        _enqueue = _connection.Prepare("INSERT INTO session_outbox (instance_id, kind, payload) VALUES ($id, $kind, $payload)", "$id", "$kind", "$payload");
        _dequeue = _connection.Prepare("DELETE FROM session_outbox WHERE seq = $seq", "$seq");
        _writes = new(_lock, batch => _connection.InTransaction([_put, _enqueue, _dequeue], () =>
        {
            foreach (var write in batch) write();
        }));
    }

    // The statements of every launch, prepared once (SQLite parses and plans them once, not at each write) and run
    // under the store's lock by the group commit.
    private readonly SqliteCommand _put, _enqueue, _dequeue;

    /// <summary>
    /// Put, Enqueue and Dequeue made at the same time share one transaction (<see cref="GroupCommit{T}"/>): a burst of
    /// launches costs a few commits rather than three or four each. Each returns once its own write is committed.
    /// </summary>
    private readonly GroupCommit<Action> _writes;

    /// <summary>Transactions committed by Put, Enqueue and Dequeue since the start.</summary>
    public int Commits => _writes.Commits;

    /// <summary>Writes waiting for a commit right now.</summary>
    internal int Waiting => _writes.Waiting;

    /// <summary>Writes in the commit under way right now.</summary>
    internal int Committing => _writes.Committing;

    public void Put(InstanceRecord record) => _writes.Write(() => _put.Run(record.Instance.Id, (int)record.Instance.State,
        record.Instance.ToByteArray(), record.Identity.Pid, (long)record.Identity.StartTime, record.BootId,
        (long)record.StopGrace.TotalMilliseconds, record.LogDirectory, record.RequestId));

    public List<InstanceRecord> LoadAll()
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT data, pid, start_ticks, boot_id, grace_ms, log_dir, request_id FROM instances ORDER BY id";
            using var reader = command.ExecuteReader();
            var records = new List<InstanceRecord>();
            while (reader.Read())
            {
                records.Add(new InstanceRecord(
                    Instance.Parser.ParseFrom((byte[])reader[0]),
                    new ProcessIdentity(reader.GetInt32(1), (ulong)reader.GetInt64(2)),
                    reader.GetString(3),
                    TimeSpan.FromMilliseconds(reader.GetInt64(4)),
                    reader.GetString(5),
                    reader.GetString(6)));
            }
            return records;
        }
    }

    /// <summary>Deletes instance records (exited ones past their retention) in one transaction.</summary>
    public void Delete(IReadOnlyCollection<string> ids)
    {
        if (ids.Count == 0) return;
        lock (_lock)
        {
            using var transaction = _connection.BeginTransaction();
            using var command = _connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = "DELETE FROM instances WHERE id = $id";
            var id = command.Parameters.Add("$id", SqliteType.Text);
            foreach (var each in ids)
            {
                id.Value = each;
                command.ExecuteNonQuery();
            }
            transaction.Commit();
        }
    }

    /// <summary>Queues a registry call durably (replayed in order by <see cref="SessionSync"/>).</summary>
    public void Enqueue(string instanceId, string kind, byte[] payload) => _writes.Write(() => _enqueue.Run(instanceId, kind, payload));

    public List<(long Seq, string InstanceId, string Kind, byte[] Payload)> Outbox(int limit)
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT seq, instance_id, kind, payload FROM session_outbox ORDER BY seq LIMIT $limit";
            command.Parameters.AddWithValue("$limit", limit);
            using var reader = command.ExecuteReader();
            var items = new List<(long, string, string, byte[])>();
            while (reader.Read()) items.Add((reader.GetInt64(0), reader.GetString(1), reader.GetString(2), (byte[])reader[3]));
            return items;
        }
    }

    public void Dequeue(long seq) => _writes.Write(() => _dequeue.Run(seq));

    public int OutboxCount()
    {
        lock (_lock)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT COUNT(*) FROM session_outbox";
            return Convert.ToInt32(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var command in (SqliteCommand[])[_put, _enqueue, _dequeue]) command.Dispose();
            _connection.Dispose();
        }
    }
}
