using Microsoft.Data.Sqlite;
using Platform.Restarts;
using Platform.Supervisor.V1;
using Platform.Testing;

namespace Platform.Supervisor.Tests;

/// <summary>supervisor.db on a real SQLite file: the restart state is stored as versioned JSON, and files written by
/// earlier versions (a positional ';'-joined string) are still read.</summary>
public sealed class WorkloadStoreTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("platform-store-").FullName;

    private string Path => System.IO.Path.Combine(_directory, "supervisor.db");

    private static readonly DateTimeOffset T0 = new(2026, 12, 2, 4, 0, 0, TimeSpan.Zero);

    private static readonly RestartState Backing = new(RestartPhase.BackingOff, 3, [T0, T0.AddSeconds(2), T0.AddSeconds(6)], null, T0.AddSeconds(14), 7, true);

    private static WorkloadRecord Record(RestartState restart) =>
        new(new Workload { Name = "agent", Status = new WorkloadStatus { Generation = 4 } }, restart, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", null);

    [Fact]
    public void The_restart_state_survives_a_reopen_field_for_field()
    {
        using (var store = new WorkloadStore(Path)) store.Put(Record(Backing));
        using var reopened = new WorkloadStore(Path);
        var loaded = Assert.Single(reopened.LoadAll()).Restart;
        AssertSame(Backing, loaded);
    }

    [Fact]
    public async Task Puts_made_while_a_commit_is_under_way_share_the_next_one_and_each_returns_once_it_is_durable()
    {
        using var store = new WorkloadStore(Path);
        store.Put(Record(RestartState.Initial));
        var before = store.Commits;
        // Another connection holds the file's write lock: the first Put takes the store's connection (with whatever
        // else had joined by then) and waits on SQLite's busy timeout; the rest queue up behind it.
        using var writeLock = new SqliteWriteLock(Path);
        var puts = Enumerable.Range(0, 20).Select(i => Task.Factory.StartNew(() =>
        {
            store.Put(new WorkloadRecord(new Workload { Name = $"w{i:00}", Revision = i + 1 }, RestartState.Initial, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", null),
                [(1, T0, "started", $"put {i}")]);
        }, TaskCreationOptions.LongRunning)).ToList();
        // Queued: almost always 19 or 18, as the first Put's thread snapshots the queue at once.
        var queued = await SqliteWriteLock.WaitUntilJoinedAsync(() => store.Waiting, () => store.Committing, 20);
        await writeLock.ReleaseAndAssertOneCommitForTheQueuedAsync(puts, queued, () => store.Commits - before);
        using var reopened = new WorkloadStore(Path);
        Assert.Equal(21, reopened.LoadAll().Count);
        Assert.Equal("put 7", Assert.Single(reopened.History("w07", 0, 10)).Detail);
    }

    [Fact]
    public void The_restart_state_is_stored_as_json_with_a_version()
    {
        using (var store = new WorkloadStore(Path)) store.Put(Record(Backing));
        var text = ReadRestartColumn();
        using var json = System.Text.Json.JsonDocument.Parse(text);
        Assert.Equal(1, json.RootElement.GetProperty("version").GetInt32());
        Assert.Equal("BackingOff", json.RootElement.GetProperty("restart").GetProperty("phase").GetString());
        Assert.Equal(3, json.RootElement.GetProperty("restart").GetProperty("recentRestarts").GetArrayLength());
    }

    [Fact]
    public void A_file_in_the_earlier_positional_format_is_still_read()
    {
        using (var store = new WorkloadStore(Path)) store.Put(Record(RestartState.Initial));
        var legacy = string.Join(';', "2", "3", string.Join(',', Backing.RecentRestarts.Select(t => t.UtcTicks)), "", Backing.NextStartAt!.Value.UtcTicks, "7", "1");
        WriteRestartColumn(legacy);
        using var reopened = new WorkloadStore(Path);
        AssertSame(Backing, Assert.Single(reopened.LoadAll()).Restart);
    }

    [Fact]
    public void A_version_this_supervisor_does_not_know_is_refused_with_a_reason()
    {
        using (var store = new WorkloadStore(Path)) store.Put(Record(Backing));
        WriteRestartColumn(ReadRestartColumn().Replace("\"version\":1", "\"version\":9", StringComparison.Ordinal));
        using var reopened = new WorkloadStore(Path);
        var error = Assert.Throws<InvalidDataException>(() => reopened.LoadAll());
        Assert.Contains("version 9", error.Message, StringComparison.Ordinal);
    }

    private static void AssertSame(RestartState expected, RestartState actual)
    {
        Assert.Equal(expected.Phase, actual.Phase);
        Assert.Equal(expected.ConsecutiveFailures, actual.ConsecutiveFailures);
        Assert.Equal(expected.RecentRestarts, actual.RecentRestarts);
        Assert.Equal(expected.StartedAt, actual.StartedAt);
        Assert.Equal(expected.NextStartAt, actual.NextStartAt);
        Assert.Equal(expected.TotalRestarts, actual.TotalRestarts);
        Assert.Equal(expected.EverStarted, actual.EverStarted);
    }

    private string ReadRestartColumn()
    {
        using var connection = Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT restart FROM workloads";
        return (string)command.ExecuteScalar()!;
    }

    private void WriteRestartColumn(string text)
    {
        using var connection = Open();
        using var command = connection.CreateCommand();
        command.CommandText = "UPDATE workloads SET restart = $r";
        command.Parameters.AddWithValue("$r", text);
        command.ExecuteNonQuery();
    }

    private SqliteConnection Open()
    {
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = Path, Pooling = false }.ToString());
        connection.Open();
        return connection;
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);
}
