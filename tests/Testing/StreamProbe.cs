using Grpc.Core;

namespace Platform.Testing;

/// <summary>Whether a service serves a new watch stream: opened with a short deadline and read once, a served one
/// waits for events until the deadline (DEADLINE_EXCEEDED); a refused one ends with its status.</summary>
public static class StreamProbe
{
    public static async Task<StatusCode> ReadOnceAsync<T>(Func<DateTime, AsyncServerStreamingCall<T>> open)
    {
        using var call = open(DateTime.UtcNow.AddMilliseconds(200));
        try
        {
            await call.ResponseStream.MoveNext(CancellationToken.None);
            return StatusCode.OK;
        }
        catch (RpcException e)
        {
            return e.StatusCode;
        }
    }

    /// <summary>Waits until a new stream is served again (a place was freed).</summary>
    public static Task ServedAgainAsync<T>(Func<DateTime, AsyncServerStreamingCall<T>> open, TimeSpan timeout) =>
        Eventually.ValueAsync(() => ReadOnceAsync(open), s => s == StatusCode.DeadlineExceeded, timeout,
            "a watcher to be served again (it waits for events until its deadline)");
}
