using System.Diagnostics;
using System.Threading.Channels;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Platform.Launcher.V1;
using Platform.Monitor.V1;
using Platform.Restarts;
using Platform.ServiceDefaults;
using Platform.Supervisor.Core;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor;

/// <summary>
/// The executor of one workload's decisions (<see cref="WorkloadCore.Decide"/>): it takes one message at a time from
/// its inbox, runs the actions the core returns in order, and feeds the result of the call that ends them back to the
/// core before it takes the next message. It is the only code that talks to the Launcher, the Monitor, the store and
/// OpenTelemetry for the workload; it decides nothing itself.
/// </summary>
public sealed class WorkloadActor
{
    private static readonly ActivitySource Source = new("Platform.Supervisor");

    private readonly Channel<(CoreEvent Event, TaskCompletionSource<Workload>? Reply)> _inbox =
        Channel.CreateUnbounded<(CoreEvent, TaskCompletionSource<Workload>?)>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Dictionary<long, TaskCompletionSource<Workload>> _callers = [];
    private readonly Dependencies _deps;
    private readonly WorkloadStore _store;
    private readonly SupervisorOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<Workload, Phase, DateTimeOffset> _publish;
    private readonly CancellationTokenSource _stop = new();
    private volatile WorkloadState _state;
    private long _nextCaller;
    private long _current; // the caller of the message in hand (0: none)
    private Task _loop = Task.CompletedTask;

    public WorkloadActor(WorkloadRecord record, bool reconciled, Dependencies deps, WorkloadStore store, SupervisorOptions options,
        TimeProvider time, ILogger logger, Action<Workload, Phase, DateTimeOffset> publish)
    {
        _deps = deps;
        _store = store;
        _options = options;
        _time = time;
        _logger = logger;
        _publish = publish;
        _state = WorkloadState.Load(record, reconciled);
    }

    public string Name => _state.Name;

    /// <summary>The workload as of its last change (never mutated once published).</summary>
    public Workload Snapshot => _state.Snapshot;

    public void Start() => _loop = Task.Run(async () =>
    {
        await RunAsync();
        Drain();
    });

    // ------------------------------------------------------------------ messages

    private Task Post(CoreEvent e)
    {
        _inbox.Writer.TryWrite((e, null));
        return Task.CompletedTask;
    }

    private Task<Workload> Ask(CoreEvent e)
    {
        var reply = new TaskCompletionSource<Workload>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_inbox.Writer.TryWrite((e, reply))) throw Gone();
        return reply.Task;
    }

    private PlatformException Gone() => PlatformException.NotFound("workload", Name, $"workload '{Name}' was deleted");

    /// <summary>The first start of a new workload, answered to its ApplyWorkload: a launch spec the Launcher refuses is
    /// thrown (a NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED or FAILED_PRECONDITION kind of <see cref="PlatformException"/>).</summary>
    public Task<Workload> FirstStartAsync() => Ask(new CoreEvent.FirstStart());

    public Task<Workload> ApplyAsync(Workload spec) => Ask(new CoreEvent.Applied(spec));

    /// <summary>A restart by hand; coalesced with any other trigger about the same generation.</summary>
    public Task<Workload> RestartAsync(long generationSeen, string reason, DateTimeOffset requestedAt) =>
        Ask(new CoreEvent.RestartRequested(generationSeen, reason, requestedAt));

    public Task DeleteAsync() => Ask(new CoreEvent.DeleteRequested());

    public Task InstanceExited(Instance instance, Instance? successor) => Post(new CoreEvent.Exited(instance, successor));

    public Task Unhealthy(long generation, string check, string detail) => Post(new CoreEvent.Unhealthy(generation, check, detail));

    public Task Reconcile(List<Instance> running, string? node = null) => Post(new CoreEvent.Reconciled(running, node));

    public Task NodeGone(string node) => Post(new CoreEvent.NodeGone(node));

    /// <summary>A look without an event (the engine's resync of quiet workloads): one tick.</summary>
    public Task Look() => Post(new CoreEvent.Tick());

    /// <summary>The node the workload is on (or starting on), as last decided.</summary>
    public string Node => _state.Workload.Status.Node;

    /// <summary>Completes once every message posted before it has been handled.</summary>
    public Task FlushAsync() => Ask(new CoreEvent.Flush());

    public Task MonitorReconnected() => Post(new CoreEvent.MonitorReconnected());

    // ------------------------------------------------------------------ the loop

    private async Task RunAsync()
    {
        var token = _stop.Token;
        while (!token.IsCancellationRequested)
        {
            try
            {
                while (!_state.Deleted && _inbox.Reader.TryRead(out var message))
                {
                    var e = message.Event;
                    if (message.Reply is { } reply)
                    {
                        e = e with { Caller = ++_nextCaller };
                        _callers[e.Caller] = reply;
                    }
                    _current = e.Caller;
                    await HandleAsync(e);
                    _current = 0;
                }
                if (_state.Deleted) break;
                await HandleAsync(new CoreEvent.Tick());
                if (_state.Deleted) break;

                // One reading of the clock: with two, a wake due between them (a timer that fired a little before
                // the wall clock reached it, then a tick that found nothing due yet) gave a delay <= 0 and the loop
                // waited for a message that might never come (an arm scheduled by ArmAt was then never made).
                var now = _time.GetUtcNow();
                var wake = WorkloadCore.NextWake(_state, now, _options);
                var delay = wake - now;
                if (delay <= TimeSpan.Zero && _inbox.Reader.Count == 0 && WorkloadCore.WakeDue(_state, now)) continue;
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(token);
                var read = _inbox.Reader.WaitToReadAsync(wait.Token).AsTask();
                if (delay > TimeSpan.Zero && wake != DateTimeOffset.MaxValue) // MaxValue: quiet, no timer (the engine's resync looks)
                {
                    await Task.WhenAny(read, Task.Delay(delay, _time, wait.Token));
                    await wait.CancelAsync();
                }
                else await read;
                if (read.IsCompletedSuccessfully && !read.Result) break; // inbox completed
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                // A defect, not a dependency's failure (those are results the core decides on): the message in hand is
                // answered with it and dropped, and nothing starts for a second.
                _logger.LogError(e, "Workload {Workload}: unexpected error; retrying in 1 s", Name);
                if (_callers.Remove(_current, out var caller)) caller.TrySetException(e);
                _current = 0;
                _state = _state with { Todo = [], Waiting = false, Caller = 0, RetryAt = _time.GetUtcNow() + TimeSpan.FromSeconds(1) };
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), _time, token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    /// <summary>One message to its end: decide, run the actions, feed the call's result back, until no call is left.</summary>
    private async Task HandleAsync(CoreEvent e)
    {
        while (true)
        {
            var now = _time.GetUtcNow();
            var (state, actions) = WorkloadCore.Decide(_state, e, now, _options, _deps.Nodes);
            // Stored before anyone can read it: the state becomes visible (GetWorkload, watchers, replies) only once
            // durable. Before, a reader could see a new status that a SIGKILL a moment later took back (a BACKING_OFF
            // read just before the kill came back RUNNING, then backed off again from a later time).
            foreach (var action in actions)
                if (action is WorkloadAction.Persist or WorkloadAction.DeleteRecord) Run(action, now);
            _state = state;
            Call? call = null;
            foreach (var action in actions)
            {
                if (action is Call c) call = c;
                else if (action is not (WorkloadAction.Persist or WorkloadAction.DeleteRecord)) Run(action, now);
            }
            if (state.Deleted && !_inbox.Reader.Completion.IsCompleted)
            {
                _inbox.Writer.TryComplete();
                await _stop.CancelAsync();
            }
            if (call is null) return;
            e = await CallAsync(call);
        }
    }

    /// <summary>After the loop: every question still queued is answered (NOT_FOUND once deleted), none left hanging.</summary>
    private void Drain()
    {
        foreach (var caller in _callers.Values) caller.TrySetException(Gone());
        _callers.Clear();
        while (_inbox.Reader.TryRead(out var message)) message.Reply?.TrySetException(Gone());
    }

    // ------------------------------------------------------------------ actions

    /// <summary>Runs one action of a decision taken at <paramref name="decidedAt"/>.</summary>
    private void Run(WorkloadAction action, DateTimeOffset decidedAt)
    {
        switch (action)
        {
            case WorkloadAction.Persist p:
                p.Record.Workload.Revision = _store.NextRevision(); // the store's counter, shared by all workloads
                _store.Put(p.Record, [.. p.History.Select(h => (h.Generation, h.Time, h.Event, h.Detail))]);
                break;
            case WorkloadAction.DeleteRecord d:
                _store.Delete(d.Name);
                break;
            case WorkloadAction.Publish p:
                _logger.LogInformation("Workload {Workload}: {Previous} -> {Phase}: {Message}", Name, p.Previous, p.Snapshot.Status.Phase, p.Message);
                _publish(p.Snapshot, p.Previous, decidedAt); // stamped when decided, not after the store's write
                break;
            case WorkloadAction.Reply r:
                if (!_callers.Remove(r.Caller, out var caller)) break;
                if (r.Error is not null) caller.TrySetException(r.Error);
                else caller.TrySetResult(r.Value!);
                break;
            case WorkloadAction.Log l:
#pragma warning disable CA2254 // the core's messages are whole sentences
                _logger.Log(l.Level, l.Message);
#pragma warning restore CA2254
                break;
            case WorkloadAction.RemoveTargets r:
                _ = RemoveTargetsAsync(r.Name, r.Generation);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(action), action, "unknown action");
        }
    }

    private DateTime Deadline(TimeSpan extra = default) => _time.GetUtcNow().UtcDateTime + _options.CallTimeout + extra;

    /// <summary>Makes a call and says how it went as an event; a dependency's failure is a result, not an exception.</summary>
    private async Task<CoreEvent> CallAsync(Call call)
    {
        var token = _stop.Token;
        Activity? span = null;
        string? traceparent = null;
        var previous = Activity.Current;
        try
        {
            switch (call)
            {
                case Call.Launch l:
                    (span, traceparent) = StartSpan(l.Span);
                    l.Request.Env["TRACEPARENT"] = traceparent;
                    // The start span's context travels with the launch (in a batch with others'), and the child
                    // continues it.
                    var launched = await _deps.LaunchAsync(l.Node, l.Request, span, traceparent, Deadline(), token);
                    return new CoreEvent.CallResult(Instance: launched, TraceParent: traceparent);
                case Call.StopInstance s:
                    var request = new StopInstanceRequest { Id = s.Id };
                    if (s.Grace is { } grace) request.Grace = Duration.FromTimeSpan(grace);
                    DateTime? deadline = s.Grace is { } wait ? Deadline(wait) : null;
                    return new CoreEvent.CallResult(Instance: await _deps.CallLauncherAsync(s.Node, (c, ct) => c.StopInstanceAsync(request, deadline: deadline, cancellationToken: ct).ResponseAsync, token));
                case Call.GetInstance g:
                    return new CoreEvent.CallResult(Instance: await _deps.CallLauncherAsync(g.Node, (c, ct) => c.GetInstanceAsync(new GetInstanceRequest { Id = g.Id }, deadline: Deadline(), cancellationToken: ct).ResponseAsync, token));
                case Call.ArmSuccessor a:
                    if (a.Span is not null)
                    {
                        (span, traceparent) = StartSpan(a.Span);
                        a.Request.Successor.Env["TRACEPARENT"] = traceparent;
                    }
                    await _deps.CallLauncherAsync(a.Node, (c, ct) => c.ArmSuccessorAsync(a.Request, deadline: Deadline(), cancellationToken: ct).ResponseAsync, token);
                    return new CoreEvent.CallResult(TraceParent: traceparent);
                case Call.ListInstances list:
                    return new CoreEvent.CallResult(Instances: await ListEverywhereAsync(list.Workload, token));
                case Call.AddTarget t:
                    await _deps.CallMonitorAsync(ct => _deps.Monitor.AddTargetAsync(new AddTargetRequest { Target = t.Target }, deadline: Deadline(), cancellationToken: ct).ResponseAsync, token);
                    return new CoreEvent.CallResult();
                case Call.RemoveTargetsAndWait r:
                    await RemoveTargetsAsync(r.Name, r.Generation);
                    return new CoreEvent.CallResult();
                default:
                    throw new ArgumentOutOfRangeException(nameof(call), call, "unknown call");
            }
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && token.IsCancellationRequested)
        {
            throw new OperationCanceledException(token); // stopping: a launch stays pending (and is retried, fenced)
        }
        catch (Exception e) when (e is RpcException or Polly.CircuitBreaker.BrokenCircuitException)
        {
            var error = e is RpcException r
                ? new CallError(Dependencies.IsUnreachable(e), r.StatusCode, r.Status.Detail, $"{r.StatusCode}: {r.Status.Detail}")
                : new CallError(Unreachable: true, StatusCode.Unavailable, e.Message, e.Message); // an open breaker
            span?.SetStatus(ActivityStatusCode.Error, call is not Call.Launch ? error.Message : error.Unreachable ? "launcher unreachable" : error.Detail);
            return new CoreEvent.CallResult(Error: error);
        }
        finally
        {
            Activity.Current = previous;
            // Ended now, not when a successor starts: the child continues this span's trace as its parent, and this
            // supervisor may be gone by then (a restart of it must not orphan the child).
            if (call is Call.ArmSuccessor) span?.SetTag("armed", true);
            span?.Stop();
        }
    }

    /// <summary>A start span of the workload's lifecycle trace, linked to the previous attempt, started now (not made
    /// current), and the traceparent its child continues.</summary>
    private static (Activity? Span, string TraceParent) StartSpan(StartSpan s)
    {
        var previous = Activity.Current;
        var lifecycle = ActivityContext.Parse(s.Lifecycle, null);
        ActivityLink[] links = s.PreviousAttempt is not null && ActivityContext.TryParse(s.PreviousAttempt, null, out var before) ? [new ActivityLink(before)] : [];
        var span = Source.StartActivity($"supervisor.start {s.Workload}", ActivityKind.Internal, lifecycle,
            [new("workload", s.Workload), new("attempt", s.Generation), new("reason", s.Reason)], links);
        Activity.Current = previous;
        var context = span?.Context ?? new ActivityContext(lifecycle.TraceId, ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded);
        return (span, $"00-{context.TraceId.ToHexString()}-{context.SpanId.ToHexString()}-01");
    }

    /// <summary>The workload's running instances on every launcher. A node that does not answer fails the list only
    /// when it is the workload's own node (its current instance may have ended there); elsewhere it only holds strays,
    /// stopped once it answers again.</summary>
    private async Task<List<Instance>> ListEverywhereAsync(string workload, CancellationToken token)
    {
        var own = _state.Workload.Status.Node;
        var lists = await Task.WhenAll(_deps.Nodes.All.Select(async node =>
        {
            try
            {
                var page = await _deps.CallLauncherAsync(node.Name, (c, ct) => c.ListInstancesAsync(new ListInstancesRequest { Workload = workload, State = Instance.Types.State.Running, PageSize = 1000 },
                    deadline: Deadline(), cancellationToken: ct).ResponseAsync, token);
                return (IEnumerable<Instance>)page.Instances;
            }
            catch (Exception e) when (e is RpcException or Polly.CircuitBreaker.BrokenCircuitException && !_deps.Nodes.Static && node.Name != own)
            {
                return [];
            }
        }));
        return [.. lists.SelectMany(l => l)];
    }

    private async Task RemoveTargetsAsync(string name, long generation)
    {
        foreach (var check in new[] { "health", "heartbeat" })
        {
            try
            {
                await _deps.CallMonitorAsync(ct => _deps.Monitor.RemoveTargetAsync(new RemoveTargetRequest { TargetId = $"{WorkloadLabels.TargetPrefix}{name}/{generation}/{check}" },
                    deadline: Deadline(), cancellationToken: ct).ResponseAsync, _stop.Token);
            }
            catch (Exception e) when (e is RpcException or Polly.CircuitBreaker.BrokenCircuitException or OperationCanceledException)
            {
                // Not there, or the monitor is down (it then forgets it anyway).
            }
        }
    }

    public async Task StopAsync()
    {
        _inbox.Writer.TryComplete();
        await _stop.CancelAsync();
        try
        {
            await _loop.WaitAsync(TimeSpan.FromSeconds(5));
        }
        catch (Exception e) when (e is TimeoutException or OperationCanceledException)
        {
        }
    }

    /// <summary>A new workload's record: generation 0, pending, with a fresh lifecycle trace (a root span of its own).</summary>
    public static WorkloadRecord Create(Workload spec, DateTimeOffset now, long revision)
    {
        var previous = Activity.Current;
        Activity.Current = null;
        string lifecycle;
        using (var root = Source.StartActivity($"supervisor.workload {spec.Name}", ActivityKind.Internal, default(ActivityContext)))
        {
            var context = root?.Context ?? new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded);
            lifecycle = $"00-{context.TraceId.ToHexString()}-{context.SpanId.ToHexString()}-01";
        }
        Activity.Current = previous;
        var workload = spec.Clone();
        workload.CreateTime = workload.UpdateTime = Timestamp.FromDateTimeOffset(now);
        workload.Revision = revision;
        workload.Status = new WorkloadStatus
        {
            Phase = Phase.Pending,
            Message = "created",
            TraceId = ActivityContext.Parse(lifecycle, null).TraceId.ToHexString(),
        };
        return new WorkloadRecord(workload, RestartState.Initial, lifecycle, null);
    }
}
