using Grpc.Core;
using Microsoft.Extensions.Logging;
using Polly;
using Polly.Retry;

namespace Platform.ServiceDefaults;

/// <summary>
/// The platform's one way to retry a background loop's work (Polly's retry strategy, never a hand-written loop):
/// exponential backoff from an initial delay to a maximum, forever, until the host stops.
/// </summary>
public static class BackgroundRetry
{
    /// <summary>A pipeline that retries whatever <paramref name="handle"/> accepts, waiting <paramref name="initial"/>
    /// doubling to <paramref name="max"/> between attempts; <paramref name="onRetry"/> hears each failure and the wait.</summary>
    public static ResiliencePipeline Forever(TimeSpan initial, TimeSpan max, TimeProvider time, Func<Exception, bool> handle, Action<Exception, TimeSpan>? onRetry = null) =>
        new ResiliencePipelineBuilder { TimeProvider = time }
            .AddRetry(new RetryStrategyOptions
            {
                MaxRetryAttempts = int.MaxValue,
                BackoffType = DelayBackoffType.Exponential,
                Delay = initial,
                MaxDelay = max,
                UseJitter = false,
                ShouldHandle = args => ValueTask.FromResult(args.Outcome.Exception is { } e && !args.Context.CancellationToken.IsCancellationRequested && handle(e)),
                OnRetry = args =>
                {
                    onRetry?.Invoke(args.Outcome.Exception!, args.RetryDelay);
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
}

/// <summary>
/// Keeps one subscription to another service's stream (list, then watch) up for as long as the host runs: after
/// any break it subscribes again, after a pause of <see cref="Initial"/> doubling to <see cref="Max"/>, reset
/// once a subscription was up; a break that asks for a fresh list (OUT_OF_RANGE, RESOURCE_EXHAUSTED: the watcher
/// fell behind) is followed at once. A stream that ends cleanly (its service is stopping) counts as a break.
/// </summary>
public sealed class Resubscriber(string what, ILogger logger, TimeProvider time)
{
    public TimeSpan Initial { get; init; } = TimeSpan.FromMilliseconds(500);

    public TimeSpan Max { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Said in the log when a subscription that was up is lost: what happens meanwhile.</summary>
    public string Meanwhile { get; init; } = "";

    /// <summary>Called with true once a subscription is up, with false when it is lost.</summary>
    public Action<bool>? Connected { get; init; }

    /// <summary>
    /// Runs <paramref name="subscribe"/> again and again until <paramref name="stoppingToken"/> is cancelled. It lists,
    /// calls the <c>up</c> action it is given once its stream is established, and follows the stream until it breaks.
    /// </summary>
    public async Task RunAsync(Func<Action, CancellationToken, Task> subscribe, CancellationToken stoppingToken)
    {
        var up = false;
        var failures = 0;
        var pipeline = new ResiliencePipelineBuilder { TimeProvider = time }
            .AddRetry(new RetryStrategyOptions
            {
                MaxRetryAttempts = int.MaxValue,
                // Every failure is retried while the host runs: a follower must not die of one bad answer.
                ShouldHandle = args => ValueTask.FromResult(!stoppingToken.IsCancellationRequested && args.Outcome.Exception is not null),
                DelayGenerator = args =>
                {
                    var wasUp = up;
                    up = false;
                    Connected?.Invoke(false);
                    if (wasUp)
                    {
                        failures = 0;
                        if (args.Outcome.Exception is not Ended)
                            logger.LogWarning("{What} lost ({Error}); {Meanwhile}", what, Describe(args.Outcome.Exception!), Meanwhile);
                    }
                    if (args.Outcome.Exception is not (RpcException or IOException or InvalidOperationException or Ended))
                        logger.LogError(args.Outcome.Exception, "{What} failed unexpectedly; subscribing again", what);
                    if (args.Outcome.Exception is RpcException { StatusCode: StatusCode.OutOfRange or StatusCode.ResourceExhausted })
                        return ValueTask.FromResult<TimeSpan?>(TimeSpan.Zero);
                    var delay = TimeSpan.FromTicks(Math.Min(Initial.Ticks * (1L << Math.Min(failures, 20)), Max.Ticks));
                    failures++;
                    return ValueTask.FromResult<TimeSpan?>(delay);
                },
            })
            .Build();
        try
        {
            await pipeline.ExecuteAsync(async token =>
            {
                await subscribe(() =>
                {
                    up = true;
                    Connected?.Invoke(true);
                }, token);
                throw new Ended();
            }, stoppingToken);
        }
        catch (Exception) when (stoppingToken.IsCancellationRequested)
        {
            // The host is stopping.
        }
        finally
        {
            Connected?.Invoke(false);
        }
    }

    private static string Describe(Exception e) => e is RpcException r ? r.StatusCode.ToString() : e.Message;

    /// <summary>The stream ended without an error.</summary>
    private sealed class Ended : Exception;
}
