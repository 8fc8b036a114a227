namespace Platform.ServiceDefaults;

/// <summary>One item's outcome in a batch call: its result, or the error its own call would have thrown.</summary>
public readonly record struct BatchOutcome<TResult>(TResult? Value, Exception? Error)
{
    /// <summary>An item of a batch response (gRPC code, message, value): the value when the code is OK, else the
    /// RpcException the item's own call would have thrown.</summary>
    public static BatchOutcome<TResult> Of(int code, string message, TResult? value) =>
        code == (int)Grpc.Core.StatusCode.OK && value is not null
            ? new(value, null)
            : new(default, new Grpc.Core.RpcException(new Grpc.Core.Status(code == 0 ? Grpc.Core.StatusCode.Internal : (Grpc.Core.StatusCode)code,
                code == 0 ? "the batch answered OK without a result" : message)));
}

/// <summary>
/// Calls made at the same time, sent as one batch call (the Supervisor's launches, the Launcher's session
/// registrations), as a group commit shares one write: an item joins the queue and a send is scheduled on the thread
/// pool; whatever has joined by the time it runs goes in that call (at most <c>maxBatch</c> per call). At most
/// <c>maxInFlight</c> calls are under way at once: items that join meanwhile go in the next call as soon as one
/// returns, which is what makes a burst's calls few and large. Each caller gets its own item's result or error; a
/// call that fails as a whole fails each of its items. Written here, not taken from a library: it is a queue, a lock
/// and a counter (System.Threading.Channels would add a reader loop per batcher that never ends). <c>schedule</c>,
/// when given, runs the sends instead of the thread pool (a test's hand).
/// </summary>
public sealed class CallBatcher<TItem, TResult>(
    Func<TItem[], Task<BatchOutcome<TResult>[]>> send, int maxBatch, int maxInFlight, Action<Action>? schedule = null)
{
    private readonly object _lock = new();
    private List<(TItem Item, TaskCompletionSource<TResult> Result)> _queue = [];
    private bool _scheduled;
    private int _inFlight;

    /// <summary>Sends <paramref name="item"/> in the next batch; its own outcome when that call returns.</summary>
    public Task<TResult> CallAsync(TItem item, CancellationToken cancellationToken = default)
    {
        var result = new TaskCompletionSource<TResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        bool due;
        lock (_lock)
        {
            _queue.Add((item, result));
            due = Due();
        }
        if (due) Schedule();
        return result.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Under the lock: whether a send is to be scheduled now (something queued, none scheduled, a place free).</summary>
    private bool Due()
    {
        if (_scheduled || _queue.Count == 0 || _inFlight >= maxInFlight) return false;
        _scheduled = true;
        return true;
    }

    private void Schedule()
    {
        if (schedule is not null) schedule(() => _ = SendQueuedAsync());
        else ThreadPool.UnsafeQueueUserWorkItem(static batcher => _ = batcher.SendQueuedAsync(), this, preferLocal: false);
    }

    private async Task SendQueuedAsync()
    {
        List<(TItem Item, TaskCompletionSource<TResult> Result)> queued;
        lock (_lock)
        {
            (queued, _queue) = (_queue, []);
            _scheduled = false;
            _inFlight++;
        }
        try
        {
            await Task.WhenAll(queued.Chunk(maxBatch).Select(SendAsync));
        }
        finally
        {
            bool again;
            lock (_lock)
            {
                _inFlight--;
                again = Due();
            }
            if (again) Schedule();
        }
    }

    private async Task SendAsync((TItem Item, TaskCompletionSource<TResult> Result)[] batch)
    {
        try
        {
            var outcomes = await send([.. batch.Select(b => b.Item)]);
            if (outcomes.Length != batch.Length)
                throw new InvalidOperationException($"a batch of {batch.Length} calls was answered with {outcomes.Length} outcomes");
            for (var i = 0; i < batch.Length; i++)
            {
                if (outcomes[i].Error is { } error) batch[i].Result.TrySetException(error);
                else batch[i].Result.TrySetResult(outcomes[i].Value!);
            }
        }
        catch (Exception e)
        {
            foreach (var (_, result) in batch) result.TrySetException(e);
        }
    }
}
