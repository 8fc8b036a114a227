using CsCheck;
using Microsoft.Extensions.Time.Testing;

namespace Platform.Restarts.Tests;

/// <summary>
/// The restart policy checked by properties: random policies and random interleavings of what its holder reports
/// (starts when due, exits, a restart by hand, a delete, time passing, refreshes), each step compared with a model
/// written from the policy's documented rules, and invariants checked after every step. CsCheck shrinks a failure to
/// its shortest sequence and prints the seed to replay it (<c>Sample(..., seed: "...")</c>).
/// </summary>
public sealed class RestartPropertyTests
{
    private static readonly DateTimeOffset T0 = new(2026, 12, 2, 0, 0, 0, TimeSpan.Zero);

    /// <summary>One thing the holder of a tracker does or sees.</summary>
    public abstract record Step;

    public sealed record Wait(int Milliseconds) : Step;

    public sealed record StartIfDue : Step;

    public sealed record Exit(bool Failed) : Step;

    public sealed record Refresh : Step;

    public sealed record RestartByHand : Step;

    public sealed record Delete : Step;

    private static readonly Gen<RestartPolicy> Policies =
        Gen.Select(
            Gen.OneOf(RestartMode.Always, RestartMode.Always, RestartMode.OnFailure, RestartMode.Never),
            Gen.OneOf(0, 100, 1000),
            Gen.OneOf(1.0, 2.0, 3.0),
            Gen.Int[1, 6],
            Gen.OneOf(500, 2000, 5000),
            (mode, initial, multiplier, maxRestarts, stable) => new RestartPolicy
            {
                Mode = mode,
                InitialBackoff = TimeSpan.FromMilliseconds(initial),
                Multiplier = multiplier,
                MaxBackoff = TimeSpan.FromMilliseconds(Math.Max(initial, 1) * 8),
                MaxRestarts = maxRestarts,
                RestartWindow = TimeSpan.FromSeconds(10),
                Cooloff = TimeSpan.FromSeconds(3),
                StableAfter = TimeSpan.FromMilliseconds(stable),
            });

    private static readonly Gen<Step> Steps = Gen.Frequency(
        (4, Gen.Int[0, 6000].Select(ms => (Step)new Wait(ms))),
        (4, Gen.Const((Step)new StartIfDue())),
        (4, Gen.Bool.Select(failed => (Step)new Exit(failed))),
        (1, Gen.Const((Step)new Refresh())),
        (1, Gen.Const((Step)new RestartByHand())),
        (1, Gen.Const((Step)new Delete())));

    private static readonly Gen<(RestartPolicy Policy, Step[] Steps)> Cases = Gen.Select(Policies, Steps.Array[1, 60], (p, s) => (p, s));

    [Fact]
    public void Every_interleaving_follows_the_policy() =>
        Cases.Sample(c => Run(c.Policy, c.Steps), iter: 3000);

    /// <summary>
    /// The same search with a planted bug, a counter reset at every start (the defect of the supervisor this platform
    /// replaces): the properties must catch it, or they prove nothing.
    /// </summary>
    [Fact]
    public void The_properties_catch_a_counter_that_is_reset_by_a_start()
    {
        var error = Assert.ThrowsAny<Exception>(() =>
            Cases.Sample(c => Run(c.Policy, c.Steps, plantResetOnStart: true), iter: 3000));
        Assert.Contains("seed", error.Message, StringComparison.OrdinalIgnoreCase);
    }

    private static void Run(RestartPolicy policy, Step[] steps, bool plantResetOnStart = false)
    {
        var time = new FakeTimeProvider(T0);
        var tracker = new RestartTracker(policy, time);
        var model = new Model(policy);
        var starts = 0;
        var deleted = false;
        foreach (var step in steps)
        {
            var now = time.GetUtcNow();
            switch (step)
            {
                case Wait w:
                    // An "at once" promise made while running must still hold after any wait (the Supervisor arms a
                    // launcher-side restart on it).
                    var promised = tracker.WouldRestartAtOnce(failed: true);
                    time.Advance(TimeSpan.FromMilliseconds(w.Milliseconds));
                    if (promised && tracker.Phase == RestartPhase.Running)
                    {
                        var probe = new RestartTracker(policy, time, tracker.State, new Random(0));
                        probe.Exited(failed: true);
                        Assert.True(probe.IsDue, $"restart at once was promised, but after {w.Milliseconds} ms an exit is {probe.Phase} until {probe.NextStartAt}");
                    }
                    break;
                case StartIfDue when tracker.IsDue && !deleted:
                    var before = tracker.State;
                    tracker.Started();
                    if (plantResetOnStart) tracker = new RestartTracker(policy, time, tracker.State with { ConsecutiveFailures = 0, RecentRestarts = [] });
                    model.Started(now);
                    starts++;
                    // A start alone never resets the counter (only a cool-off that ran out starts it afresh).
                    if (before.Phase != RestartPhase.CoolingOff)
                    {
                        Assert.Equal(before.ConsecutiveFailures, tracker.ConsecutiveFailures);
                        Assert.Equal(before.RecentRestarts, tracker.State.RecentRestarts);
                    }
                    break;
                case Exit e when tracker.Phase == RestartPhase.Running:
                    tracker.Exited(e.Failed);
                    model.Exited(now, e.Failed);
                    break;
                case Refresh:
                    tracker.Refresh();
                    model.Refresh(now);
                    break;
                case RestartByHand when !deleted:
                    tracker.RestartNow();
                    model.RestartNow();
                    break;
                case Delete:
                    tracker.Stop();
                    model.Stop();
                    deleted = true;
                    break;
            }

            now = time.GetUtcNow();
            var s = tracker.State;
            Assert.Equal(model.Phase, s.Phase);
            Assert.Equal(model.Failures, s.ConsecutiveFailures);
            Assert.Equal(model.NextStartAt, s.NextStartAt);
            Assert.Equal(model.Recent, s.RecentRestarts);
            Assert.Equal(model.IsDue(now), tracker.IsDue);
            // Every start after the first is a restart.
            Assert.Equal(Math.Max(0, starts - 1), s.TotalRestarts);
            // Never more restarts within the window than the limit.
            Assert.True(tracker.RestartCount <= policy.MaxRestarts, $"{tracker.RestartCount} restarts within the window, limit {policy.MaxRestarts}");
            // A deleted workload is never due again.
            if (deleted) Assert.False(tracker.IsDue);
        }
    }

    /// <summary>The policy's rules as documented (README, libs/Restarts), written independently of the tracker.</summary>
    private sealed class Model(RestartPolicy policy)
    {
        public RestartPhase Phase { get; private set; } = RestartPhase.Pending;
        public int Failures { get; private set; }
        public List<DateTimeOffset> Recent { get; private set; } = [];
        public DateTimeOffset? NextStartAt { get; private set; }
        private DateTimeOffset? _startedAt;

        public bool IsDue(DateTimeOffset now) => Phase == RestartPhase.Pending ||
            (Phase is RestartPhase.BackingOff or RestartPhase.CoolingOff && NextStartAt <= now);

        public void Started(DateTimeOffset now)
        {
            if (Phase == RestartPhase.CoolingOff)
            {
                // A cool-off that ran out: the counter starts afresh.
                Failures = 0;
                Recent = [];
            }
            Phase = RestartPhase.Running;
            _startedAt = now;
            NextStartAt = null;
        }

        public void Refresh(DateTimeOffset now)
        {
            // Only a run of StableAfter resets the counter and the backoff.
            if (Phase == RestartPhase.Running && _startedAt is { } started && now - started >= policy.StableAfter)
            {
                Failures = 0;
                Recent = [];
            }
        }

        public void Exited(DateTimeOffset now, bool failed)
        {
            Refresh(now);
            _startedAt = null;
            if (policy.Mode == RestartMode.Never || (policy.Mode == RestartMode.OnFailure && !failed))
            {
                Phase = failed ? RestartPhase.Failed : RestartPhase.Stopped;
                NextStartAt = null;
                return;
            }
            Recent = [.. Recent.Where(t => t > now - policy.RestartWindow)];
            if (Recent.Count >= policy.MaxRestarts)
            {
                // The limit: a cool-off, exactly at it.
                Phase = RestartPhase.CoolingOff;
                NextStartAt = now + policy.Cooloff;
                return;
            }
            Failures++;
            var backoff = TimeSpan.FromTicks((long)Math.Min(policy.InitialBackoff.Ticks * Math.Pow(policy.Multiplier, Failures - 1), policy.MaxBackoff.Ticks));
            Recent.Add(now);
            Phase = RestartPhase.BackingOff;
            NextStartAt = now + backoff;
        }

        public void RestartNow()
        {
            Phase = RestartPhase.Pending;
            _startedAt = null;
            NextStartAt = null;
        }

        public void Stop()
        {
            Phase = RestartPhase.Stopped;
            _startedAt = null;
            NextStartAt = null;
        }
    }
}
