using System.Runtime.ExceptionServices;

namespace Platform.ServiceDefaults;

/// <summary>
/// Writes made at the same time, committed in one transaction: each joins a queue, and whichever caller gets the
/// store's connection next commits every queued write at once (<c>commit</c> runs them in one transaction), so a burst
/// of writes costs a few commits rather than one each. A caller never returns before its own write is committed, or
/// fails with the commit's error (then every write of that batch failed, none is half-done). The stores hold one
/// SQLite connection under one lock; Microsoft.Data.Sqlite has no such batching, and it is a queue and that lock.
/// </summary>
public sealed class GroupCommit<T>(Lock connection, Action<T[]> commit)
{
    private sealed class Pending(T write)
    {
        public readonly T Write = write;
        public bool Done; // guarded by the connection's lock
        public Exception? Error;
    }

    private readonly List<Pending> _pending = []; // guarded by itself
    private int _commits;
    private int _committing;

    /// <summary>Writes waiting for a commit right now.</summary>
    public int Waiting
    {
        get { lock (_pending) return _pending.Count; }
    }

    /// <summary>Writes in the commit under way right now.</summary>
    public int Committing => Volatile.Read(ref _committing);

    /// <summary>Transactions committed since the start (one for several writes made at the same time).</summary>
    public int Commits => Volatile.Read(ref _commits);

    /// <summary>Returns once <paramref name="write"/> is committed, with whatever else was queued by then.</summary>
    public void Write(T write)
    {
        var mine = new Pending(write);
        lock (_pending) _pending.Add(mine);
        lock (connection)
        {
            if (!mine.Done)
            {
                Pending[] batch;
                lock (_pending)
                {
                    batch = [.. _pending];
                    _pending.Clear();
                    Volatile.Write(ref _committing, batch.Length);
                }
                try
                {
                    var writes = new T[batch.Length];
                    for (var i = 0; i < batch.Length; i++) writes[i] = batch[i].Write;
                    commit(writes);
                    Interlocked.Increment(ref _commits);
                }
                catch (Exception e)
                {
                    foreach (var pending in batch) pending.Error = e;
                }
                foreach (var pending in batch) pending.Done = true;
                Volatile.Write(ref _committing, 0);
            }
        }
        if (mine.Error is { } error) ExceptionDispatchInfo.Throw(error);
    }
}
