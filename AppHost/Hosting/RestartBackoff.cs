namespace Platform.AppHost.Hosting;

/// <summary>
/// Exponential backoff between restarts of a resource: <see cref="Initial"/> doubling to <see cref="Max"/>; the
/// failure count resets once a run has lasted <see cref="StableAfter"/> (never merely because a start succeeded).
/// </summary>
public sealed record RestartBackoff(TimeSpan Initial, double Multiplier, TimeSpan Max, TimeSpan StableAfter)
{
    public static RestartBackoff Default { get; } = new(TimeSpan.FromSeconds(1), 2, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(30));

    /// <summary>Delay before the restart that follows the <paramref name="consecutiveFailures"/>-th failure (1-based).</summary>
    public TimeSpan DelayAfter(int consecutiveFailures)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(consecutiveFailures, 1);
        var ticks = Initial.Ticks * Math.Pow(Multiplier, Math.Min(consecutiveFailures - 1, 62));
        return ticks >= Max.Ticks ? Max : TimeSpan.FromTicks((long)ticks);
    }

    /// <summary>The consecutive-failure count after a run of <paramref name="runTime"/> ended in an exit.</summary>
    public int NextFailureCount(int consecutiveFailures, TimeSpan runTime) =>
        runTime >= StableAfter ? 1 : consecutiveFailures + 1;
}
