using Grpc.Core;

namespace Platform.ServiceDefaults;

/// <summary>The server side of the batch calls (ApplyWorkloads, LaunchBatch, RegisterSessions): the size checks of
/// the whole call, and each item run at once with its own outcome.</summary>
public static class BatchCalls
{
    /// <summary>The most items one batch call carries, as the contracts say: what the servers accept and what the
    /// clients that batch (CallBatcher's users) put in one call.</summary>
    public const int MaxItems = 1000;

    /// <summary>INVALID_ARGUMENT for a call with no items or more than <see cref="MaxItems"/>.</summary>
    public static void CheckSize(int count, string field, string item)
    {
        if (count == 0) throw PlatformException.Invalid(field, $"is empty: give at least one {item}");
        if (count > MaxItems) throw PlatformException.Invalid(field, $"has {count} {item}s; at most {MaxItems} go in one call");
    }

    /// <summary>Runs every item at once; an item refused (a PlatformException, or an RpcException from a call it made)
    /// gets <paramref name="refused"/>'s result with its status code and message, and leaves the others alone.</summary>
    public static Task<TResult[]> EachAsync<TItem, TResult>(IEnumerable<TItem> items, Func<TItem, Task<TResult>> run, Func<TItem, StatusCode, string, TResult> refused) =>
        Task.WhenAll(items.Select(async item =>
        {
            try
            {
                return await run(item);
            }
            catch (PlatformException e)
            {
                return refused(item, e.StatusCode, e.Message);
            }
            catch (RpcException e)
            {
                return refused(item, e.StatusCode, e.Status.Detail);
            }
        }));
}
