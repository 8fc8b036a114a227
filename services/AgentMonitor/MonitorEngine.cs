using System.Diagnostics.Metrics;
using System.Threading.Channels;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Platform.ServiceDefaults;
using Platform.AgentMonitor.Probes;
using Platform.Monitor.V1;
using State = Platform.Monitor.V1.AgentStatus.Types.State;

namespace Platform.AgentMonitor;

/// <summary>
/// Holds the targets and probes them. One loop keeps a queue of due times (a heap) and starts each due probe as a
/// task once one of <see cref="MonitorOptions.MaxConcurrentProbes"/> slots is free; a probe gets its target's timeout
/// and is abandoned (a failure) when it overruns it, so one hung probe costs one slot for one timeout and nothing
/// else. No thread per target: waiting probes are queue entries, running ones are tasks.
/// Statuses change only here; a change of state is published to watchers (transitions, not every probe).
/// </summary>
public sealed class MonitorEngine : BackgroundService, IHealthCheck
{
    private static readonly Meter Meter = new("Platform.AgentMonitor");
    private static readonly Histogram<double> ProbeDuration = Meter.CreateHistogram<double>("platform.monitor.probe.duration", "s", "Duration of one probe");
    private static readonly Counter<long> Transitions = Meter.CreateCounter<long>("platform.monitor.transitions", description: "Status transitions");

    private static readonly string[] OutcomeNames = [.. System.Enum.GetNames<ProbeOutcome>().Select(n => n.ToLowerInvariant())];
    private readonly MonitorOptions _options;
    private readonly TimeProvider _time;
    private readonly ProbeFactory _factory;
    private readonly ILogger<MonitorEngine> _logger;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Entry> _targets = new(StringComparer.Ordinal);
    private readonly PriorityQueue<Entry, long> _queue = new();
    private readonly Channel<Entry> _ready = Channel.CreateUnbounded<Entry>();
    private int _inFlight;
    private readonly SemaphoreSlim _wake = new(0, 1);
    private readonly List<Watcher> _watchers = [];
    private long _lastTurn;
    private CancellationToken _stopping;

    private sealed class Entry(TargetSpec spec, AgentStatus status)
    {
        public TargetSpec Spec { get; } = spec;
        public IProbe Probe { get; set; } = null!;
        public AgentStatus Status { get; set; } = status;
        public long Due;
        public bool Running;
        public bool Again;
        public bool Removed;
        public Task? Hung;
    }

    private sealed class Watcher(string targetId, string workload, int capacity)
    {
        public Channel<AgentStatus> Channel { get; } = System.Threading.Channels.Channel.CreateBounded<AgentStatus>(
            new BoundedChannelOptions(capacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        public bool Matches(AgentStatus s) => Filter(targetId, workload, s);

        public static bool Filter(string targetId, string workload, AgentStatus s) =>
            (targetId.Length == 0 || s.TargetId == targetId) && (workload.Length == 0 || s.Workload == workload);
    }

    public MonitorEngine(IOptions<MonitorOptions> options, TimeProvider time, ProbeFactory factory, ILogger<MonitorEngine> logger)
    {
        _options = options.Value;
        _time = time;
        _factory = factory;
        _logger = logger;
        _lastTurn = time.GetTimestamp();
    }

    /// <summary>Raised after every probe with the target's new status (for benchmarks; keep handlers cheap).</summary>
    public event Action<AgentStatus>? Probed;


    public int Count
    {
        get
        {
            lock (_lock) return _targets.Count;
        }
    }

    /// <summary>Adds a target or replaces the one with its id. An identical target is left as it is (status kept).</summary>
    public Target Upsert(TargetSpec spec)
    {
        Entry? old;
        Entry entry;
        lock (_lock)
        {
            if (_targets.TryGetValue(spec.Id, out old) && old.Spec.Target.Equals(spec.Target)) return old.Spec.Target;
            var now = _time.GetUtcNow();
            entry = new Entry(spec, new AgentStatus
            {
                TargetId = spec.Id,
                Workload = spec.Workload,
                State = State.Unknown,
                Detail = "not probed yet",
                TransitionTime = Timestamp.FromDateTimeOffset(now),
                Labels = { spec.Target.Labels },
            });
            var created = entry;
            entry.Probe = _factory.Create(spec, _time, () => ProbeNow(created));
            if (old is not null) old.Removed = true;
            _targets[spec.Id] = entry;
            // The first probe comes within the first second (spread when jitter is on), not a whole interval later.
            var first = _options.Jitter > 0 ? Random.Shared.NextDouble() * Math.Min(1, spec.Interval.TotalSeconds) : 0;
            Schedule(entry, _time.GetTimestamp() + ToTicks(TimeSpan.FromSeconds(first)));
        }
        old?.Probe.Dispose();
        Signal();
        return spec.Target;
    }

    public bool Remove(string id)
    {
        Entry? entry;
        lock (_lock)
        {
            if (!_targets.Remove(id, out entry)) return false;
            entry.Removed = true;
        }
        entry.Probe.Dispose();
        return true;
    }

    public AgentStatus? GetStatus(string id)
    {
        lock (_lock) return _targets.TryGetValue(id, out var e) ? e.Status : null;
    }

    /// <summary>Targets in id order after <paramref name="after"/>, at most <paramref name="limit"/>.</summary>
    public List<Target> ListTargets(Func<Target, bool> filter, string after, int limit)
    {
        lock (_lock)
            return [.. _targets.Values.Select(e => e.Spec.Target).Where(t => string.CompareOrdinal(t.Id, after) > 0 && filter(t))
                .OrderBy(t => t.Id, StringComparer.Ordinal).Take(limit)];
    }

    public List<AgentStatus> ListStatuses(Func<AgentStatus, bool> filter, string after, int limit)
    {
        lock (_lock)
            return [.. _targets.Values.Select(e => e.Status).Where(s => string.CompareOrdinal(s.TargetId, after) > 0 && filter(s))
                .OrderBy(s => s.TargetId, StringComparer.Ordinal).Take(limit)];
    }

    public List<string> TargetIds(Func<Target, bool> filter)
    {
        lock (_lock) return [.. _targets.Values.Where(e => filter(e.Spec.Target)).Select(e => e.Spec.Id)];
    }

    /// <summary>Transitions of matching targets; with <paramref name="includeCurrent"/> first their current status.</summary>
    public ChannelReader<AgentStatus> Watch(string targetId, string workload, bool includeCurrent, out IDisposable subscription)
    {
        lock (_lock)
        {
            // Room for the current picture (however many targets) plus 4,096 transitions.
            var current = includeCurrent
                ? _targets.Values.Select(e => e.Status).Where(s => Watcher.Filter(targetId, workload, s))
                    .OrderBy(s => s.TargetId, StringComparer.Ordinal).ToList()
                : [];
            var watcher = new Watcher(targetId, workload, 4096 + current.Count);
            foreach (var status in current) watcher.Channel.Writer.TryWrite(status);
            _watchers.Add(watcher);
            subscription = new Unsubscribe(this, watcher);
            return watcher.Channel.Reader;
        }
    }

    private sealed class Unsubscribe(MonitorEngine engine, Watcher watcher) : IDisposable
    {
        public void Dispose()
        {
            lock (engine._lock) engine._watchers.Remove(watcher);
            watcher.Channel.Writer.TryComplete();
        }
    }

    /// <summary>Probe this target again as soon as a slot is free.</summary>
    private void ProbeNow(Entry entry)
    {
        lock (_lock)
        {
            if (entry.Removed) return;
            if (entry.Running) entry.Again = true;
            else Schedule(entry, _time.GetTimestamp());
        }
        Signal();
    }

    private void Schedule(Entry entry, long due)
    {
        entry.Due = due;
        _queue.Enqueue(entry, due);
    }

    private void Signal()
    {
        try
        {
            if (_wake.CurrentCount == 0) _wake.Release();
        }
        catch (SemaphoreFullException)
        {
        }
    }

    private long ToTicks(TimeSpan span) => (long)(span.TotalSeconds * _time.TimestampFrequency);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        _stopping = stoppingToken;
        // MaxConcurrentProbes workers take due targets from one queue: at most that many probes in flight, and a hung
        // probe holds one worker for its timeout. The loop itself never waits for a worker.
        var workers = Enumerable.Range(0, Math.Max(1, _options.MaxConcurrentProbes)).Select(_ => Task.Run(WorkerAsync, CancellationToken.None)).ToList();
        var due = new List<Entry>();
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                Volatile.Write(ref _lastTurn, _time.GetTimestamp());
                long next;
                lock (_lock)
                {
                    var now = _time.GetTimestamp();
                    while (_queue.TryPeek(out var entry, out var at) && at <= now)
                    {
                        _queue.Dequeue();
                        if (entry.Removed || entry.Running || entry.Due != at) continue;
                        entry.Running = true;
                        due.Add(entry);
                    }
                    next = _queue.TryPeek(out _, out var first) ? first : long.MaxValue;
                }
                foreach (var entry in due) _ready.Writer.TryWrite(entry);
                if (due.Count > 0)
                {
                    due.Clear();
                    continue;
                }
                // Until the next probe is due or a target changes (Signal), but turning at least three times per
                // StallAfter so that liveness can tell a stuck loop from an idle one: at rest, a turn every 10 s.
                var longest = TimeSpan.FromTicks(Math.Max(_options.StallAfter.Ticks / 3, TimeSpan.TicksPerMillisecond * 100));
                var wait = next == long.MaxValue ? longest
                    : TimeSpan.FromSeconds(Math.Clamp((next - _time.GetTimestamp()) / (double)_time.TimestampFrequency, 0, longest.TotalSeconds));
                if (wait > TimeSpan.Zero) await _wake.WaitAsync(wait, stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        _ready.Writer.TryComplete();
        await Task.WhenAll(workers);
    }

    private async Task WorkerAsync()
    {
        await foreach (var entry in _ready.Reader.ReadAllAsync())
        {
            if (_stopping.IsCancellationRequested) return;
            Interlocked.Increment(ref _inFlight);
            try
            {
                await RunAsync(entry);
            }
            finally
            {
                Interlocked.Decrement(ref _inFlight);
            }
        }
    }

    private async Task RunAsync(Entry entry)
    {
        var started = _time.GetTimestamp();
        ProbeResult result;
        try
        {
            if (entry.Hung is { IsCompleted: false })
                result = ProbeResult.Failed($"the previous probe is still hung after its timeout of {entry.Spec.Timeout.TotalSeconds:0.###}s");
            else
            {
                // One timer per probe: the timeout cancels the probe and ends the wait for it, so a probe that ignores
                // its cancellation is abandoned at its timeout all the same.
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stopping);
                timeout.CancelAfter(entry.Spec.Timeout);
                // Probes that may block a thread (file reads: a hung network filesystem) run on their own work item.
                var probe = entry.Probe is IBlockingProbe ? Task.Run(() => entry.Probe.RunAsync(timeout.Token)) : entry.Probe.RunAsync(timeout.Token);
                try
                {
                    result = await probe.WaitAsync(timeout.Token);
                }
                catch (OperationCanceledException) when (!_stopping.IsCancellationRequested)
                {
                    if (!probe.IsCompleted) entry.Hung = probe;
                    result = ProbeResult.Failed($"no answer within the timeout of {entry.Spec.Timeout.TotalSeconds:0.###}s");
                }
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            return;
        }
        catch (Exception e)
        {
            _logger.LogWarning(e, "Probe of {Target} threw", entry.Spec.Id);
            result = ProbeResult.Unknown($"the probe could not run: {e.Message}");
        }
        var elapsed = _time.GetElapsedTime(started);
        ProbeDuration.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("probe", entry.Spec.ProbeKind),
            new KeyValuePair<string, object?>("outcome", OutcomeNames[(int)result.Outcome]));
        try
        {
            Apply(entry, result, elapsed);
            Probed?.Invoke(entry.Status);
        }
        catch (Exception e)
        {
            _logger.LogError(e, "Recording the probe of {Target} failed", entry.Spec.Id);
        }
        finally
        {
            // Whatever happened above, the target is probed again.
            lock (_lock)
            {
                entry.Running = false;
                if (!entry.Removed)
                {
                    var interval = ToTicks(entry.Spec.Interval);
                    var jitter = _options.Jitter > 0 ? (long)(interval * _options.Jitter * (Random.Shared.NextDouble() * 2 - 1)) : 0;
                    Schedule(entry, entry.Again ? _time.GetTimestamp() : _time.GetTimestamp() + interval + jitter);
                    entry.Again = false;
                }
            }
            Signal();
        }
    }

    private void Apply(Entry entry, ProbeResult result, TimeSpan elapsed)
    {
        var spec = entry.Spec;
        var now = _time.GetUtcNow();
        lock (_lock)
        {
            if (entry.Removed) return;
            var previous = entry.Status;
            var failures = result.Outcome switch
            {
                ProbeOutcome.Failed => previous.ConsecutiveFailures + 1,
                ProbeOutcome.Alive => 0,
                _ => previous.ConsecutiveFailures,
            };
            var lastActivity = result.LastActivity is { } activity ? Timestamp.FromDateTimeOffset(activity) : previous.LastActivityTime;
            State state;
            var detail = result.Detail;
            switch (result.Outcome)
            {
                case ProbeOutcome.Unknown:
                    state = State.Unknown;
                    break;
                case ProbeOutcome.Failed when failures >= spec.FailureThreshold:
                    state = State.Unhealthy;
                    break;
                case ProbeOutcome.Failed:
                    // Destructive verdicts need repeated observations: below the threshold the state stays.
                    state = previous.State;
                    detail = $"{result.Detail} ({failures} of {spec.FailureThreshold} failures)";
                    break;
                default:
                    if (spec.IsActivityProbe && result.IdleMatch is { } line)
                    {
                        state = State.Idle;
                        detail = $"idle pattern matched: {line}";
                    }
                    else if (spec.IsActivityProbe && result.LastActivity is { } last && now - last >= spec.IdleAfter)
                    {
                        state = State.Idle;
                        detail = $"no activity for {Format.Age(now - last)} (idle after {Format.Age(spec.IdleAfter)})";
                    }
                    else state = State.Healthy;
                    break;
            }
            var status = new AgentStatus
            {
                TargetId = spec.Id,
                Workload = spec.Workload,
                State = state,
                Detail = detail,
                LastProbeTime = Timestamp.FromDateTimeOffset(now),
                LastActivityTime = lastActivity,
                ConsecutiveFailures = failures,
                LastProbeDuration = Duration.FromTimeSpan(elapsed),
                TransitionTime = state != previous.State ? Timestamp.FromDateTimeOffset(now) : previous.TransitionTime,
                Labels = { spec.Target.Labels },
            };
            entry.Status = status;
            if (state == previous.State) return;
            Transitions.Add(1, new KeyValuePair<string, object?>("state", state.ToString()));
            foreach (var watcher in _watchers)
            {
                if (!watcher.Matches(status) || watcher.Channel.Writer.TryWrite(status)) continue;
                watcher.Channel.Writer.TryComplete(PlatformException.Exhausted("this watcher fell more than 4096 transitions behind; watch again with include_current"));
            }
        }
        _logger.Log(entry.Status.State == State.Unhealthy ? LogLevel.Warning : LogLevel.Debug, "{Target}: {State} ({Detail})", spec.Id, entry.Status.State, entry.Status.Detail);
    }

    /// <summary>Liveness: the loop turns at least three times per StallAfter while it runs; a loop stuck for
    /// <see cref="MonitorOptions.StallAfter"/> fails <c>/alive</c> so its runner restarts the monitor.</summary>
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var since = _time.GetElapsedTime(Volatile.Read(ref _lastTurn));
        var targets = Count;
        var data = new Dictionary<string, object> { ["targets"] = targets, ["probes_in_flight"] = Volatile.Read(ref _inFlight), ["loop_turned_seconds_ago"] = Math.Round(since.TotalSeconds, 3) };
        if (ExecuteTask is { IsCompleted: true }) return Task.FromResult(HealthCheckResult.Unhealthy("the probe loop has ended", data: data));
        return Task.FromResult(since > _options.StallAfter
            ? HealthCheckResult.Unhealthy($"the probe loop has not turned for {since.TotalSeconds:0}s", data: data)
            : HealthCheckResult.Healthy($"{targets} targets", data));
    }

    public override void Dispose()
    {
        base.Dispose();
        lock (_lock)
        {
            foreach (var e in _targets.Values) e.Probe.Dispose();
            _targets.Clear();
            foreach (var w in _watchers) w.Channel.Writer.TryComplete();
        }
    }
}
