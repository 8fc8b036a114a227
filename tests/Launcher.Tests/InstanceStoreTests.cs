using Microsoft.Data.Sqlite;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Launcher.Tests;

/// <summary>launcher.db on a real SQLite file: the writes of a burst of launches share commits.</summary>
public sealed class InstanceStoreTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("launcher-store-").FullName;

    private string Path => System.IO.Path.Combine(_directory, "launcher.db");

    private static InstanceRecord Record(int i) =>
        new(new Instance { Id = $"i{i:00}", State = Instance.Types.State.Running }, new ProcessIdentity(1000 + i, 42), "boot", TimeSpan.FromSeconds(5), $"/logs/i{i:00}", $"r{i:00}");

    [Fact]
    public async Task Puts_and_outbox_writes_made_while_a_commit_is_under_way_share_the_next_one_and_each_returns_once_it_is_durable()
    {
        using var store = new InstanceStore(Path);
        store.Enqueue("i-first", "register", [0]);
        var before = store.Commits;
        // Another connection holds the file's write lock: the first write takes the store's connection (with whatever
        // else had joined by then) and waits on SQLite's busy timeout; the rest queue up behind it.
        using var writeLock = new SqliteWriteLock(Path);
        var writes = Enumerable.Range(0, 20).Select(i => Task.Factory.StartNew(() =>
        {
            if (i % 2 == 0) store.Put(Record(i));
            else store.Enqueue($"i{i:00}", "register", [(byte)i]);
        }, TaskCreationOptions.LongRunning)).ToList();
        var queued = await SqliteWriteLock.WaitUntilJoinedAsync(() => store.Waiting, () => store.Committing, 20);
        await writeLock.ReleaseAndAssertOneCommitForTheQueuedAsync(writes, queued, () => store.Commits - before);
        using var reopened = new InstanceStore(Path);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => $"i{2 * i:00}"), reopened.LoadAll().Select(r => r.Instance.Id).Order());
        var outbox = reopened.Outbox(100);
        Assert.Equal(11, outbox.Count);
        Assert.Equal("i-first", outbox[0].InstanceId); // replayed in the order written
        Assert.Equal(outbox.Select(o => o.Seq).Order(), outbox.Select(o => o.Seq));
    }

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }
}
