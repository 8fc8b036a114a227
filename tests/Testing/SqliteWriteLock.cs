using System.Diagnostics;
using Microsoft.Data.Sqlite;
using Xunit;

namespace Platform.Testing;

/// <summary>
/// Another connection's write lock on a SQLite file (<c>BEGIN IMMEDIATE</c>): a store's writer waits on SQLite's busy
/// timeout until <see cref="Release"/>, so the writes made meanwhile queue up behind it (the group commit tests).
/// </summary>
public sealed class SqliteWriteLock : IDisposable
{
    private readonly SqliteConnection _connection;

    public SqliteWriteLock(string path)
    {
        _connection = new SqliteConnection($"Data Source={path};Pooling=False");
        _connection.Open();
        Execute("BEGIN IMMEDIATE");
    }

    public void Release() => Execute("COMMIT");

    /// <summary>
    /// Waits (10 s at most) until <paramref name="count"/> writes have joined a group commit, one commit under way and
    /// the rest queued, and returns how many are queued.
    /// </summary>
    public static async Task<int> WaitUntilJoinedAsync(Func<int> waiting, Func<int> committing, int count)
    {
        var clock = Stopwatch.StartNew();
        while ((committing() == 0 || waiting() + committing() < count) && clock.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(10);
        Assert.Equal(count, waiting() + committing());
        return waiting();
    }

    /// <summary>
    /// Checks a group commit held up behind this lock: no write returned while it was held; once it is released every
    /// write returns, in one commit after the first write's (none when nothing had queued behind that one).
    /// </summary>
    public async Task ReleaseAndAssertOneCommitForTheQueuedAsync(IReadOnlyCollection<Task> writes, int queued, Func<int> commitsSince)
    {
        Assert.All(writes, w => Assert.False(w.IsCompleted)); // none returns before its write is committed
        Release();
        await Task.WhenAll(writes).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(queued > 0 ? 2 : 1, commitsSince()); // the first commit's, then one for all that queued behind it
    }

    private void Execute(string sql)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    public void Dispose() => _connection.Dispose();
}
