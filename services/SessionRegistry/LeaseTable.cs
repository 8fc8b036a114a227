using System.Collections.Concurrent;

namespace Platform.SessionRegistry;

/// <summary>
/// The leases of live sessions, in memory: renewals are answered from here (as etcd answers keep-alives), without
/// a disk write; expiry and ending go through the store. After a restart every live lease starts afresh with its
/// full ttl (as etcd does on a leader change), so a registry outage never expires a session by itself.
/// </summary>
public sealed class LeaseTable
{
    private readonly ConcurrentDictionary<string, Lease> _leases = new(StringComparer.Ordinal);

    public int Count => _leases.Count;

    public sealed class Lease(long ttlTicks, long heartbeatTicks)
    {
        public long TtlTicks { get; } = ttlTicks;
        public long HeartbeatTicks { get; private set; } = heartbeatTicks;
        public long ExpireTicks { get; private set; } = heartbeatTicks + ttlTicks;

        /// <summary>Renews unless the lease already ran out (then it is the sweeper's, and stays dead).</summary>
        public bool TryRenew(long nowTicks)
        {
            lock (this)
            {
                if (nowTicks >= ExpireTicks) return false;
                HeartbeatTicks = nowTicks;
                ExpireTicks = nowTicks + TtlTicks;
                return true;
            }
        }

        /// <summary>A renewal made elsewhere (another replica) at <paramref name="heartbeatTicks"/>, if later than this
        /// one's; it revives a lease that ran out here only in the sweeper's hands (the session is not expired yet).</summary>
        public void Extend(long heartbeatTicks)
        {
            lock (this)
            {
                if (heartbeatTicks <= HeartbeatTicks) return;
                HeartbeatTicks = heartbeatTicks;
                ExpireTicks = heartbeatTicks + TtlTicks;
            }
        }

        public (long Heartbeat, long Expire) Read()
        {
            lock (this) return (HeartbeatTicks, ExpireTicks);
        }
    }

    // When the sweeper means to look next (UTC ticks), and how to wake it sooner: a lease added that runs out before
    // then pulls it forward. Renewals only push expiries later, so they never need to.
    private long _nextLook = long.MaxValue;
    private TaskCompletionSource _sooner = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Add(string id, TimeSpan ttl, DateTimeOffset now)
    {
        var lease = new Lease(ttl.Ticks, now.UtcTicks);
        _leases[id] = lease;
        if (lease.ExpireTicks < Volatile.Read(ref _nextLook)) Volatile.Read(ref _sooner).TrySetResult();
    }

    /// <summary>
    /// The sweeper says when it looks next; the task completes if a lease that runs out sooner is added meanwhile.
    /// </summary>
    public Task LookingAt(DateTimeOffset next)
    {
        var sooner = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _sooner, sooner);
        Volatile.Write(ref _nextLook, next.UtcTicks);
        return sooner.Task;
    }

    public bool TryGet(string id, out Lease lease) => _leases.TryGetValue(id, out lease!);

    public void Remove(string id) => _leases.TryRemove(id, out _);

    /// <summary>Ids whose lease ran out at <paramref name="now"/>.</summary>
    public List<string> Expired(DateTimeOffset now) => Expired(now, out _);

    /// <summary>Ids whose lease ran out at <paramref name="now"/>, and when the first of the others runs out (null: none).</summary>
    public List<string> Expired(DateTimeOffset now, out DateTimeOffset? next)
    {
        var ticks = now.UtcTicks;
        var expired = new List<string>();
        var earliest = long.MaxValue;
        foreach (var (id, lease) in _leases)
        {
            var expire = lease.Read().Expire;
            if (expire <= ticks) expired.Add(id);
            else if (expire < earliest) earliest = expire;
        }
        next = earliest == long.MaxValue ? null : new DateTimeOffset(earliest, TimeSpan.Zero);
        return expired;
    }
}
