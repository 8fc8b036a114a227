namespace Platform.AgentMonitor;

/// <summary>The AgentMonitor's settings (section <c>Monitor</c>).</summary>
public sealed class MonitorOptions
{
    public const string Section = "Monitor";

    /// <summary>Watch streams served at once; one more is RESOURCE_EXHAUSTED.</summary>
    public int MaxWatchers { get; set; } = 1000;

    /// <summary>Probes in flight at once, over all targets.</summary>
    public int MaxConcurrentProbes { get; set; } = 64;

    public TimeSpan DefaultInterval { get; set; } = TimeSpan.FromSeconds(10);
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(5);
    public TimeSpan DefaultIdleAfter { get; set; } = TimeSpan.FromMinutes(5);
    public int DefaultFailureThreshold { get; set; } = 3;

    /// <summary>A heartbeat file older than this is a failure when the probe names no max_age.</summary>
    public TimeSpan DefaultHeartbeatMaxAge { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Each interval is stretched or shrunk by up to this fraction at random, and a new target's first probe comes
    /// after a random part of its first second, so thousands of targets do not fire at once.
    /// </summary>
    public double Jitter { get; set; } = 0.1;

    /// <summary>When the probe loop has not turned for this long, <c>/alive</c> fails.</summary>
    public TimeSpan StallAfter { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Follow registry sessions whose attributes carry a probe spec (<see cref="ProbeAttribute"/>).</summary>
    public bool DiscoverFromRegistry { get; set; } = true;

    /// <summary>Session attribute holding a target in protobuf JSON, for example <c>{"process":{}}</c>.</summary>
    public string ProbeAttribute { get; set; } = "platform.monitor/probe";

    /// <summary>Lines from the end of a pane or log that patterns are matched against.</summary>
    public int PatternLines { get; set; } = 5;

    /// <summary>The tmux binary.</summary>
    public string TmuxPath { get; set; } = "tmux";
}
