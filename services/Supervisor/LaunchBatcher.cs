using System.Diagnostics;
using Grpc.Core;
using Platform.Launcher.V1;
using Platform.ServiceDefaults;

namespace Platform.Supervisor;

/// <summary>
/// One node's launches, sent together: launches asked for at the same time (many workloads applied at once, a
/// restart wave) go to its Launcher as one <c>LaunchBatch</c> call instead of one <c>Launch</c> call each
/// (<see cref="CallBatcher{TItem,TResult}"/>: what joins while <see cref="MaxInFlight"/> calls are under way goes in
/// the next). Each caller gets its own launch's instance, or its own error as the RpcException Launch would have
/// thrown; a call that fails as a whole (unreachable, an open breaker) fails each of its launches. A Launcher that
/// does not know LaunchBatch (UNIMPLEMENTED: an older one) gets single Launch calls from then on.
/// </summary>
public sealed class LaunchBatcher
{
    /// <summary>Calls under way at once per node.</summary>
    public const int MaxInFlight = 2;

    private static readonly System.Diagnostics.Metrics.Meter Meter = new("Platform.Supervisor");
    private static readonly System.Diagnostics.Metrics.Histogram<int> BatchSize = Meter.CreateHistogram<int>("platform.supervisor.launch_batch.size",
        "{launch}", "Launches sent to a launcher in one LaunchBatch call");

    private readonly NodeClient _node;
    private readonly CallBatcher<Pending, Instance> _batcher;
    private volatile bool _singles;
    private long _calls;
    private long _launches;

    /// <param name="schedule">Runs the sends instead of the thread pool (a test's hand).</param>
    public LaunchBatcher(NodeClient node, Action<Action>? schedule = null)
    {
        _node = node;
        _batcher = new CallBatcher<Pending, Instance>(SendAsync, BatchCalls.MaxItems, MaxInFlight, schedule);
    }

    /// <summary>The LaunchBatch calls made so far, and the launches they carried.</summary>
    public (long Calls, long Launches) Sent => (Interlocked.Read(ref _calls), Interlocked.Read(ref _launches));

    /// <summary>Launches <paramref name="request"/> on this node in the next batch; <paramref name="traceParent"/> is
    /// the caller's trace context, which the child continues, and <paramref name="span"/> the caller's span of it, if
    /// recorded (a single Launch call is made under it, as its HTTP client span would replace a traceparent given by
    /// hand).</summary>
    public Task<Instance> LaunchAsync(LaunchRequest request, Activity? span, string? traceParent, DateTime deadline, CancellationToken cancellationToken) =>
        _batcher.CallAsync(new Pending(new LaunchBatchItem { Request = request, Traceparent = traceParent ?? "" }, span, deadline), cancellationToken);

    private async Task<BatchOutcome<Instance>[]> SendAsync(Pending[] batch)
    {
        if (!_singles)
        {
            var request = new LaunchBatchRequest { Items = { batch.Select(p => p.Item) } };
            try
            {
                var response = await _node.Pipeline.ExecuteAsync(async ct =>
                    await _node.Client.LaunchBatchAsync(request, deadline: batch.Max(p => p.Deadline), cancellationToken: ct));
                Interlocked.Increment(ref _calls);
                Interlocked.Add(ref _launches, batch.Length);
                BatchSize.Record(batch.Length, new KeyValuePair<string, object?>("node", _node.Name));
                return [.. response.Results.Select(r => BatchOutcome<Instance>.Of(r.Code, r.Message, r.Instance))];
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unimplemented)
            {
                _singles = true; // a Launcher from before LaunchBatch: one call per launch, as then
            }
        }
        return await Task.WhenAll(batch.Select(SendOneAsync));
    }

    private async Task<BatchOutcome<Instance>> SendOneAsync(Pending pending)
    {
        var previous = Activity.Current;
        try
        {
            var headers = new Metadata();
            Activity.Current = pending.Span; // the HTTP client span under the caller's
            if (pending.Span is null && pending.Item.Traceparent.Length > 0) headers.Add("traceparent", pending.Item.Traceparent); // no listener: by hand
            return new(await _node.Pipeline.ExecuteAsync(async ct => await _node.Client.LaunchAsync(pending.Item.Request, headers, pending.Deadline, ct)), null);
        }
        catch (Exception e)
        {
            return new(null, e);
        }
        finally
        {
            Activity.Current = previous;
        }
    }

    private sealed record Pending(LaunchBatchItem Item, Activity? Span, DateTime Deadline);
}
