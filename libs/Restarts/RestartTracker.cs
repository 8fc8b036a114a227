namespace Platform.Restarts;

public enum RestartMode
{
    /// <summary>Restart whatever the exit.</summary>
    Always,
    /// <summary>Restart after a non-zero exit, a signal or a health failure; a clean exit stops.</summary>
    OnFailure,
    /// <summary>Never restart.</summary>
    Never,
}

/// <summary>
/// How to restart (Tmux-Orchestrator's defaults): backoff from <see cref="InitialBackoff"/> multiplied by
/// <see cref="Multiplier"/> up to <see cref="MaxBackoff"/>; at most <see cref="MaxRestarts"/> restarts within
/// <see cref="RestartWindow"/>, then a <see cref="Cooloff"/>; the counter and the backoff reset only once a run has
/// lasted <see cref="StableAfter"/>.
/// </summary>
public sealed record RestartPolicy
{
    public RestartMode Mode { get; init; } = RestartMode.Always;
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromSeconds(1);
    public double Multiplier { get; init; } = 2;
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>Restarts allowed within <see cref="RestartWindow"/>; <see cref="int.MaxValue"/>: no limit.</summary>
    public int MaxRestarts { get; init; } = 5;
    public TimeSpan RestartWindow { get; init; } = TimeSpan.FromMinutes(5);
    public TimeSpan Cooloff { get; init; } = TimeSpan.FromMinutes(5);
    public TimeSpan StableAfter { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>Each backoff is stretched by a random part of this fraction of it (0 to 1).</summary>
    public double Jitter { get; init; }

    /// <summary>The backoff before the restart that follows the <paramref name="failure"/>-th consecutive failure
    /// (1-based), without jitter.</summary>
    public TimeSpan BackoffAfter(int failure)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(failure, 1);
        var ticks = InitialBackoff.Ticks * Math.Pow(Multiplier, Math.Min(failure - 1, 1000));
        return double.IsNaN(ticks) || ticks >= MaxBackoff.Ticks ? MaxBackoff : TimeSpan.FromTicks((long)ticks);
    }
}

public enum RestartPhase
{
    /// <summary>To be started now.</summary>
    Pending,
    Running,
    /// <summary>Waiting for its backoff before the next start.</summary>
    BackingOff,
    /// <summary>Hit the restart limit; waiting for the cool-off before it tries again.</summary>
    CoolingOff,
    /// <summary>Ended and not to be restarted (clean exit under ON_FAILURE, NEVER, or stopped by hand).</summary>
    Stopped,
    /// <summary>Failed and not to be restarted (NEVER).</summary>
    Failed,
}

/// <summary>Everything the tracker knows, to store and to resume from (times are absolute, so clocks continue across a
/// restart of whoever holds it).</summary>
public sealed record RestartState(
    RestartPhase Phase,
    int ConsecutiveFailures,
    IReadOnlyList<DateTimeOffset> RecentRestarts,
    DateTimeOffset? StartedAt,
    DateTimeOffset? NextStartAt,
    long TotalRestarts,
    bool EverStarted)
{
    public static RestartState Initial { get; } = new(RestartPhase.Pending, 0, [], null, null, 0, false);
}

/// <summary>
/// The restart-policy state machine of one workload. It never waits and owns no timer: the holder reports starts,
/// exits and failures, asks <see cref="IsDue"/> / <see cref="NextStartAt"/>, and stores <see cref="State"/>.
/// All times come from the <see cref="TimeProvider"/>.
/// </summary>
public sealed class RestartTracker(RestartPolicy policy, TimeProvider time, RestartState? state = null, Random? random = null)
{
    private readonly Random _random = random ?? Random.Shared;
    private RestartState _state = state ?? RestartState.Initial;

    public RestartPolicy Policy { get; set; } = policy;
    public RestartState State => _state;
    public RestartPhase Phase => _state.Phase;
    public DateTimeOffset? NextStartAt => _state.NextStartAt;
    public long TotalRestarts => _state.TotalRestarts;
    /// <summary>Consecutive failures without a stable run: the exponent of the next backoff.</summary>
    public int ConsecutiveFailures => _state.ConsecutiveFailures;

    /// <summary>Restarts within the current window.</summary>
    public int RestartCount
    {
        get
        {
            var since = time.GetUtcNow() - Policy.RestartWindow;
            return _state.RecentRestarts.Count(t => t > since);
        }
    }

    /// <summary>True when a start should happen now (Pending, or a backoff/cool-off that has run out).</summary>
    public bool IsDue => _state.Phase == RestartPhase.Pending ||
        (_state.Phase is RestartPhase.BackingOff or RestartPhase.CoolingOff && _state.NextStartAt <= time.GetUtcNow());

    /// <summary>A new instance is running. After a cool-off the counter starts afresh.</summary>
    public void Started()
    {
        var now = time.GetUtcNow();
        var s = _state;
        if (s.Phase == RestartPhase.CoolingOff) s = s with { ConsecutiveFailures = 0, RecentRestarts = [] };
        _state = s with
        {
            Phase = RestartPhase.Running,
            StartedAt = now,
            NextStartAt = null,
            TotalRestarts = s.EverStarted ? s.TotalRestarts + 1 : s.TotalRestarts,
            EverStarted = true,
        };
    }

    /// <summary>While running: once the run has lasted StableAfter, the counter and the backoff reset. Returns true when
    /// they did.</summary>
    public bool Refresh()
    {
        if (_state.Phase != RestartPhase.Running || _state.StartedAt is not { } started) return false;
        if (time.GetUtcNow() - started < Policy.StableAfter || (_state.ConsecutiveFailures == 0 && _state.RecentRestarts.Count == 0)) return false;
        _state = _state with { ConsecutiveFailures = 0, RecentRestarts = [] };
        return true;
    }

    /// <summary>
    /// The instance ended: <paramref name="failed"/> for a non-zero exit, a signal or a health failure. Decides what
    /// comes next: a backoff, a cool-off, or the end (by the mode). Never resets the counter for a start alone: only a
    /// run of StableAfter does.
    /// </summary>
    public RestartPhase Exited(bool failed)
    {
        var now = time.GetUtcNow();
        Refresh();
        var s = _state with { StartedAt = null };
        if (Policy.Mode == RestartMode.Never || (Policy.Mode == RestartMode.OnFailure && !failed))
        {
            _state = s with { Phase = failed ? RestartPhase.Failed : RestartPhase.Stopped, NextStartAt = null };
            return _state.Phase;
        }
        var recent = s.RecentRestarts.Where(t => t > now - Policy.RestartWindow).ToList();
        if (recent.Count >= Policy.MaxRestarts)
        {
            _state = s with { Phase = RestartPhase.CoolingOff, RecentRestarts = recent, NextStartAt = now + Policy.Cooloff };
            return _state.Phase;
        }
        var failures = s.ConsecutiveFailures + 1;
        var delay = Policy.BackoffAfter(failures);
        if (Policy.Jitter > 0) delay += TimeSpan.FromTicks((long)(delay.Ticks * Policy.Jitter * _random.NextDouble()));
        recent.Add(now);
        _state = s with { Phase = RestartPhase.BackingOff, ConsecutiveFailures = failures, RecentRestarts = recent, NextStartAt = now + delay };
        return _state.Phase;
    }

    /// <summary>
    /// While running: whether an exit now (a failure, or not) would be followed by a start at once — no backoff, no
    /// cool-off, allowed by the mode. Time only makes the answer more permissive (old restarts leave the window, a long
    /// run resets the counter), so a "true" now still holds at the exit: the Supervisor arms a launcher-side restart on it.
    /// </summary>
    public bool WouldRestartAtOnce(bool failed)
    {
        if (_state.Phase != RestartPhase.Running) return false;
        var probe = new RestartTracker(Policy, time, _state, new Random(0));
        return probe.Exited(failed) == RestartPhase.BackingOff && probe.IsDue;
    }

    /// <summary>A restart by hand: start again now, with no backoff and nothing counted against the limit.</summary>
    public void RestartNow() => _state = _state with { Phase = RestartPhase.Pending, StartedAt = null, NextStartAt = null };

    /// <summary>Stopped on purpose (deleted, or NEVER after an exit): nothing more happens.</summary>
    public void Stop() => _state = _state with { Phase = RestartPhase.Stopped, StartedAt = null, NextStartAt = null };
}
