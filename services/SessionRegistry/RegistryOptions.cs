namespace Platform.SessionRegistry;

/// <summary>Settings of the registry (configuration section "Registry").</summary>
public sealed class RegistryOptions
{
    public const string Section = "Registry";

    /// <summary>Watch streams served at once; one more is RESOURCE_EXHAUSTED.</summary>
    public int MaxWatchers { get; set; } = 1000;

    /// <summary>Directory of the SQLite store; default: PLATFORM_DATA_DIR, else ./data.</summary>
    public string? DataDirectory { get; set; }

    public TimeSpan DefaultTtl { get; set; } = TimeSpan.FromSeconds(30);
    public TimeSpan MinTtl { get; set; } = TimeSpan.FromSeconds(1);
    public TimeSpan MaxTtl { get; set; } = TimeSpan.FromHours(24);

    /// <summary>The sweeper's shortest pause: a lease that ran out is marked within it. At rest it sleeps until the
    /// first lease runs out or its lock is due (LeaderLease / 3); a lease registered meanwhile that runs out sooner
    /// wakes it.</summary>
    public TimeSpan SweepInterval { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>Events kept for watchers that resume from a revision (in memory and in the store).</summary>
    public int WatchHistory { get; set; } = 10_000;

    /// <summary>Events buffered per watcher; a watcher that falls further behind is cut off (RESOURCE_EXHAUSTED).</summary>
    public int WatchBuffer { get; set; } = 4096;

    /// <summary>How long a request_id is remembered, and an ended or expired session kept.</summary>
    public TimeSpan Retention { get; set; } = TimeSpan.FromHours(24);

    /// <summary>Most writes committed in one transaction (one fsync).</summary>
    public int MaxBatch { get; set; } = 1024;

    /// <summary>The sweeper's leader lock: how long it holds without renewal.</summary>
    public TimeSpan LeaderLease { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Replicas on one PostgreSQL store: how often the lease renewals made here are stored for the replica
    /// that sweeps. That sweeper expires a lease twice this long after it ran out.</summary>
    public TimeSpan HeartbeatFlushInterval { get; set; } = TimeSpan.FromMilliseconds(250);
}

/// <summary>Sizes a caller may not exceed.</summary>
public static class Limits
{
    public const int NameLength = 253;
    public const int Labels = 64;
    public const int LabelValueLength = 63;
    public const int Attributes = 64;
    public const int AttributeKeyLength = 253;
    public const int AttributeValueLength = 16 * 1024;
    public const int RequestIdLength = 128;
    public const int ReasonLength = 1024;
    public const int HeartbeatBatch = 10_000;
    public const int DefaultPageSize = 100;
    public const int MaxPageSize = 1000;
}
