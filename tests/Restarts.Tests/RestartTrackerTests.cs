using Microsoft.Extensions.Time.Testing;

namespace Platform.Restarts.Tests;

public sealed class RestartTrackerTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 23, 12, 0, 0, TimeSpan.Zero));

    /// <summary>Runs for <paramref name="runFor"/>, exits, waits out the backoff; returns the backoff it waited.</summary>
    private TimeSpan CrashAfter(RestartTracker tracker, TimeSpan runFor, bool failed = true)
    {
        tracker.Started();
        _time.Advance(runFor);
        tracker.Exited(failed);
        if (tracker.Phase != RestartPhase.BackingOff) return TimeSpan.Zero;
        var delay = tracker.NextStartAt!.Value - _time.GetUtcNow();
        Assert.False(tracker.IsDue);
        _time.Advance(delay - TimeSpan.FromMilliseconds(1));
        Assert.False(tracker.IsDue);
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(tracker.IsDue);
        return delay;
    }

    [Fact]
    public void Backoff_doubles_from_one_second_and_is_capped_at_sixty()
    {
        var tracker = new RestartTracker(new RestartPolicy { MaxRestarts = int.MaxValue }, _time);
        var delays = Enumerable.Range(0, 9).Select(_ => CrashAfter(tracker, TimeSpan.FromMilliseconds(100)).TotalSeconds).ToList();
        Assert.Equal([1, 2, 4, 8, 16, 32, 60, 60, 60], delays);
        Assert.Equal(8, tracker.TotalRestarts); // the ninth restart has not started yet
    }

    [Fact]
    public void A_custom_policy_follows_its_own_numbers()
    {
        var policy = new RestartPolicy { InitialBackoff = TimeSpan.FromMilliseconds(250), Multiplier = 3, MaxBackoff = TimeSpan.FromSeconds(5), MaxRestarts = int.MaxValue };
        var tracker = new RestartTracker(policy, _time);
        Assert.Equal([0.25, 0.75, 2.25, 5, 5], Enumerable.Range(0, 5).Select(_ => CrashAfter(tracker, TimeSpan.Zero).TotalSeconds));
        var zero = new RestartTracker(policy with { InitialBackoff = TimeSpan.Zero }, _time);
        zero.Started();
        zero.Exited(failed: true);
        Assert.True(zero.IsDue); // zero backoff: due at once
    }

    [Fact]
    public void An_immediate_restart_is_foreseen_only_while_the_policy_allows_one()
    {
        var policy = new RestartPolicy { InitialBackoff = TimeSpan.Zero, MaxRestarts = 2, Mode = RestartMode.OnFailure };
        var tracker = new RestartTracker(policy, _time);
        Assert.False(tracker.WouldRestartAtOnce(failed: true)); // not running yet
        tracker.Started();
        Assert.True(tracker.WouldRestartAtOnce(failed: true));
        Assert.False(tracker.WouldRestartAtOnce(failed: false)); // ON_FAILURE: a clean exit is the end
        Assert.Equal(RestartPhase.Running, tracker.Phase); // asking changes nothing

        // Two restarts use up the limit: the third failure cools off, so no immediate restart is foreseen...
        for (var i = 0; i < 2; i++)
        {
            tracker.Exited(failed: true);
            Assert.True(tracker.IsDue);
            tracker.Started();
        }
        Assert.False(tracker.WouldRestartAtOnce(failed: true));
        // ...until a stable run resets the counter.
        _time.Advance(policy.StableAfter);
        Assert.True(tracker.WouldRestartAtOnce(failed: true));

        var always = new RestartTracker(new RestartPolicy { InitialBackoff = TimeSpan.Zero }, _time);
        always.Started();
        Assert.True(always.WouldRestartAtOnce(failed: false));
        var backoff = new RestartTracker(new RestartPolicy(), _time); // 1 s first backoff
        backoff.Started();
        Assert.False(backoff.WouldRestartAtOnce(failed: true));
    }

    [Fact]
    public void Five_restarts_within_the_window_then_a_cool_off_then_it_tries_again_afresh()
    {
        var tracker = new RestartTracker(new RestartPolicy(), _time);
        Assert.Equal([1, 2, 4, 8, 16], Enumerable.Range(0, 5).Select(_ => CrashAfter(tracker, TimeSpan.FromSeconds(2)).TotalSeconds));
        Assert.Equal(5, tracker.RestartCount);

        tracker.Started();
        _time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(RestartPhase.CoolingOff, tracker.Exited(failed: true));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromMinutes(5), tracker.NextStartAt);
        _time.Advance(TimeSpan.FromMinutes(5) - TimeSpan.FromSeconds(1));
        Assert.False(tracker.IsDue);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(tracker.IsDue);

        // After the cool-off: the counter and the backoff start afresh.
        tracker.Started();
        Assert.Equal(0, tracker.RestartCount);
        Assert.Equal(1, CrashAfter(tracker, TimeSpan.FromSeconds(1)).TotalSeconds); // the first crash after the cool-off
    }

    [Fact]
    public void Restarts_spread_wider_than_the_window_never_cool_off()
    {
        var policy = new RestartPolicy { RestartWindow = TimeSpan.FromMinutes(1), MaxRestarts = 3, StableAfter = TimeSpan.FromHours(1) };
        var tracker = new RestartTracker(policy, _time);
        for (var i = 0; i < 10; i++)
        {
            tracker.Started();
            _time.Advance(TimeSpan.FromSeconds(40)); // shorter than StableAfter: the backoff keeps growing
            Assert.Equal(RestartPhase.BackingOff, tracker.Exited(failed: true));
            _time.Advance(tracker.NextStartAt!.Value - _time.GetUtcNow());
        }
        Assert.Equal(TimeSpan.FromSeconds(60), policy.BackoffAfter(tracker.ConsecutiveFailures));
    }

    [Fact]
    public void The_counter_and_backoff_reset_after_a_stable_run_and_only_then()
    {
        var tracker = new RestartTracker(new RestartPolicy(), _time);
        Assert.Equal([1, 2, 4], Enumerable.Range(0, 3).Select(_ => CrashAfter(tracker, TimeSpan.FromSeconds(59)).TotalSeconds));
        Assert.Equal(8, CrashAfter(tracker, TimeSpan.FromSeconds(59)).TotalSeconds);
        // A run of 60 s is stable: the next crash starts from 1 s again.
        Assert.Equal(1, CrashAfter(tracker, TimeSpan.FromSeconds(60)).TotalSeconds);
        Assert.Equal(1, tracker.RestartCount);

        // While running, the reset shows once the run is stable.
        tracker.Started();
        _time.Advance(TimeSpan.FromSeconds(59));
        Assert.False(tracker.Refresh());
        Assert.Equal(1, tracker.RestartCount);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(tracker.Refresh());
        Assert.Equal(0, tracker.RestartCount);
    }

    [Fact]
    public void Regression_Tmux_Orchestrator_reset_the_counter_on_every_successful_start_so_a_crash_loop_never_reached_its_cap()
    {
        // The daemon starts fine and crashes two seconds later, forever. Every start "succeeds".
        var tracker = new RestartTracker(new RestartPolicy(), _time);
        var phases = new List<RestartPhase>();
        for (var i = 0; i < 6; i++)
        {
            tracker.Started();
            _time.Advance(TimeSpan.FromSeconds(2));
            phases.Add(tracker.Exited(failed: true));
            if (tracker.NextStartAt is { } next && tracker.Phase == RestartPhase.BackingOff) _time.Advance(next - _time.GetUtcNow());
        }
        Assert.Equal([.. Enumerable.Repeat(RestartPhase.BackingOff, 5), RestartPhase.CoolingOff], phases);
    }

    [Fact]
    public void Modes_decide_whether_an_exit_restarts()
    {
        var onFailure = new RestartTracker(new RestartPolicy { Mode = RestartMode.OnFailure }, _time);
        onFailure.Started();
        Assert.Equal(RestartPhase.Stopped, onFailure.Exited(failed: false));
        Assert.False(onFailure.IsDue);
        onFailure.Started();
        Assert.Equal(RestartPhase.BackingOff, onFailure.Exited(failed: true));

        var never = new RestartTracker(new RestartPolicy { Mode = RestartMode.Never }, _time);
        never.Started();
        Assert.Equal(RestartPhase.Failed, never.Exited(failed: true));
        never.Started();
        Assert.Equal(RestartPhase.Stopped, never.Exited(failed: false));

        var always = new RestartTracker(new RestartPolicy(), _time);
        always.Started();
        Assert.Equal(RestartPhase.BackingOff, always.Exited(failed: false));
    }

    [Fact]
    public void Jitter_stretches_each_backoff_by_at_most_its_fraction()
    {
        var tracker = new RestartTracker(new RestartPolicy { Jitter = 0.5, MaxRestarts = int.MaxValue }, _time, random: new Random(7));
        var delays = Enumerable.Range(0, 6).Select(_ => CrashAfter(tracker, TimeSpan.Zero).TotalSeconds).ToList();
        double[] bases = [1, 2, 4, 8, 16, 32];
        for (var i = 0; i < delays.Count; i++) Assert.InRange(delays[i], bases[i], bases[i] * 1.5);
        Assert.NotEqual(bases, delays);
    }

    [Fact]
    public void A_tracker_resumed_from_its_stored_state_continues_its_clocks()
    {
        var tracker = new RestartTracker(new RestartPolicy(), _time);
        for (var i = 0; i < 3; i++) CrashAfter(tracker, TimeSpan.FromSeconds(1));
        tracker.Started();
        _time.Advance(TimeSpan.FromSeconds(1));
        tracker.Exited(failed: true); // backing off 8 s
        _time.Advance(TimeSpan.FromSeconds(3));

        // The holder dies; a new one resumes from the stored state 3 s into the 8 s backoff.
        var resumed = new RestartTracker(new RestartPolicy(), _time, tracker.State);
        Assert.Equal(RestartPhase.BackingOff, resumed.Phase);
        Assert.False(resumed.IsDue);
        _time.Advance(TimeSpan.FromSeconds(5));
        Assert.True(resumed.IsDue);
        Assert.Equal(4, resumed.RestartCount);
        Assert.Equal(16, CrashAfter(resumed, TimeSpan.FromSeconds(1)).TotalSeconds);
    }

    [Fact]
    public void A_restart_by_hand_is_immediate_and_not_counted()
    {
        var tracker = new RestartTracker(new RestartPolicy(), _time);
        CrashAfter(tracker, TimeSpan.FromSeconds(1));
        tracker.Started();
        tracker.RestartNow();
        Assert.True(tracker.IsDue);
        Assert.Equal(1, tracker.RestartCount);
        tracker.Started();
        Assert.Equal(2, tracker.TotalRestarts);
    }
}
