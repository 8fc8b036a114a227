using System.Diagnostics;
using Grpc.Core;
using Platform.Launcher.V1;

namespace Platform.Supervisor;

/// <summary>
/// One node's launches, sent together: launches asked for at the same time (many workloads applied at once, a
/// restart wave) go to its Launcher as one <c>LaunchBatch</c> call instead of one <c>Launch</c> call each, as the
/// registry's and the store's group commits share one write. A launch joins the queue and a send is scheduled on the
/// thread pool; whatever has joined by the time it runs goes in that call (up to the Launcher's 1,000), and launches
/// that join while a call is under way are sent in another one at once, so nothing waits for an earlier batch. Each
/// caller gets its own launch's instance, or its own error as the RpcException Launch would have thrown; a call
/// that fails as a whole (unreachable, an open breaker) fails each of its launches. A Launcher that does not know
/// LaunchBatch (UNIMPLEMENTED: an older one) gets single Launch calls from then on. Written here, not taken from a
/// library: it is the group commit's queue over a gRPC call, a few lines (System.Threading.Channels would add a
/// reader loop per node that never ends). <c>schedule</c>, when given, runs the sends instead of the thread pool.
/// </summary>
public sealed class LaunchBatcher(NodeClient node, Action<Action>? schedule = null)
{
    /// <summary>The most launches one LaunchBatch call carries (the Launcher's limit).</summary>
    public const int MaxBatch = 1000;

    private readonly object _lock = new();
    private List<Pending> _queue = [];
    private bool _scheduled;
    private volatile bool _singles;
    private long _calls;
    private long _launches;

    /// <summary>The LaunchBatch calls made so far, and the launches they carried.</summary>
    public (long Calls, long Launches) Sent => (Interlocked.Read(ref _calls), Interlocked.Read(ref _launches));

    /// <summary>Launches <paramref name="request"/> on this node in the next batch; <paramref name="traceParent"/> is
    /// the caller's trace context, which the child continues, and <paramref name="span"/> the caller's span of it, if
    /// recorded (a single Launch call is made under it, as its HTTP client span would replace a traceparent given by
    /// hand).</summary>
    public Task<Instance> LaunchAsync(LaunchRequest request, Activity? span, string? traceParent, DateTime deadline, CancellationToken cancellationToken)
    {
        var pending = new Pending(new LaunchBatchItem { Request = request, Traceparent = traceParent ?? "" }, span, deadline);
        bool first;
        lock (_lock)
        {
            _queue.Add(pending);
            first = !_scheduled;
            _scheduled = true;
        }
        if (first && schedule is not null) schedule(() => _ = SendQueuedAsync()); // a test's hand
        else if (first) ThreadPool.UnsafeQueueUserWorkItem(static batcher => _ = batcher.SendQueuedAsync(), this, preferLocal: false);
        return pending.Result.Task.WaitAsync(cancellationToken);
    }

    private async Task SendQueuedAsync()
    {
        List<Pending> queued;
        lock (_lock)
        {
            (queued, _queue) = (_queue, []);
            _scheduled = false;
        }
        await Task.WhenAll(queued.Chunk(MaxBatch).Select(SendAsync));
    }

    private async Task SendAsync(Pending[] batch)
    {
        if (_singles)
        {
            await Task.WhenAll(batch.Select(SendOneAsync));
            return;
        }
        var request = new LaunchBatchRequest();
        foreach (var pending in batch) request.Items.Add(pending.Item);
        var deadline = batch.Max(p => p.Deadline);
        try
        {
            var response = await node.Pipeline.ExecuteAsync(async ct => await node.Client.LaunchBatchAsync(request, deadline: deadline, cancellationToken: ct));
            Interlocked.Increment(ref _calls);
            Interlocked.Add(ref _launches, batch.Length);
            if (response.Results.Count != batch.Length)
                throw new RpcException(new Status(StatusCode.Internal, $"the launcher answered {response.Results.Count} results for {batch.Length} launches"));
            for (var i = 0; i < batch.Length; i++)
            {
                var result = response.Results[i];
                if (result.Code == (int)StatusCode.OK && result.Instance is { } instance) batch[i].Result.TrySetResult(instance);
                else batch[i].Result.TrySetException(new RpcException(new Status((StatusCode)result.Code, result.Message)));
            }
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Unimplemented)
        {
            _singles = true; // a Launcher from before LaunchBatch: one call per launch, as then
            await Task.WhenAll(batch.Select(SendOneAsync));
        }
        catch (Exception e)
        {
            foreach (var pending in batch) pending.Result.TrySetException(e);
        }
    }

    private async Task SendOneAsync(Pending pending)
    {
        var previous = Activity.Current;
        try
        {
            var headers = new Metadata();
            Activity.Current = pending.Span; // the HTTP client span under the caller's
            if (pending.Span is null && pending.Item.Traceparent.Length > 0) headers.Add("traceparent", pending.Item.Traceparent); // no listener: by hand
            pending.Result.TrySetResult(await node.Pipeline.ExecuteAsync(async ct =>
                await node.Client.LaunchAsync(pending.Item.Request, headers, pending.Deadline, ct)));
        }
        catch (Exception e)
        {
            pending.Result.TrySetException(e);
        }
        finally
        {
            Activity.Current = previous;
        }
    }

    private sealed record Pending(LaunchBatchItem Item, Activity? Span, DateTime Deadline)
    {
        public TaskCompletionSource<Instance> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
