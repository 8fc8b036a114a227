using System.Runtime;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Platform.ServiceDefaults;

/// <summary>
/// Gives memory back after a burst of work. Objects that live across a burst (requests waiting on a group commit, a
/// launch or a call to another service) survive the young collections and die in gen2, where the background,
/// non-compacting collector leaves them as fragmentation that stays resident: measured, 100,000 registrations leave
/// the registry a 107 MB heap around 40 MB of live data, and a Launcher that has started and stopped a few thousand
/// instances holds a third more than after one compacting collection. So once a service has allocated at least
/// <see cref="BurstBytes"/> since the last trim and its allocation rate has then fallen below an eighth of its
/// average since that trim (the burst is over), one compacting, decommitting collection brings the resident size
/// back to what is live, and the C heap's free pages go back to the kernel (<see cref="NativeHeap"/>). Under a
/// steady load the rate does not fall and nothing is collected by hand; at rest it reads one counter every
/// <see cref="Interval"/>. No library does this; it is a few lines and runs rarely.
/// </summary>
public sealed class IdleMemoryTrimmer(ILogger<IdleMemoryTrimmer> logger) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);

    /// <summary>What must have been allocated since the last trim for another to be worth its pause: small, because
    /// what a burst allocates before its first collection stays committed (gen0's budget follows the cache size).</summary>
    public const long BurstBytes = 8L << 20;

    /// <summary>A smaller burst is left to the collector's own pace, but what it freed in the C heap (SQLite's pages,
    /// buffers of the HTTP/2 stack) stays resident until trimmed: once this much has been allocated since the last trim
    /// of the C heap and that burst is over by the same rule, the C heap alone is trimmed.</summary>
    public const long NativeBurstBytes = 1L << 20;

    /// <summary>At least <paramref name="threshold"/> allocated since a trim, and the last tick under an eighth of the
    /// average per tick since then.</summary>
    private static bool BurstOver(long sinceTrim, long lastTick, long ticks, long threshold) =>
        sinceTrim >= threshold && lastTick * 8 < sinceTrim / ticks;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var trimmedAt = GC.GetTotalAllocatedBytes();
        var (previous, nativeTrimmedAt) = (trimmedAt, trimmedAt);
        var (ticks, nativeTicks) = (0L, 0L);
        using var timer = new PeriodicTimer(Interval); // real time: this is about the process, not a service's clock
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                var allocated = GC.GetTotalAllocatedBytes();
                var (sinceTrim, lastTick) = (allocated - trimmedAt, allocated - previous);
                previous = allocated;
                (ticks, nativeTicks) = (ticks + 1, nativeTicks + 1);
                if (BurstOver(sinceTrim, lastTick, ticks, BurstBytes))
                {
                    var before = GC.GetTotalMemory(false);
                    GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
                    GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                    (trimmedAt, ticks) = (GC.GetTotalAllocatedBytes(), 0);
                    previous = trimmedAt;
                    logger.LogDebug("Trimmed the heap after {Allocated} bytes allocated: {Before} -> {After} bytes live", sinceTrim, before, GC.GetTotalMemory(false));
                }
                else if (!BurstOver(allocated - nativeTrimmedAt, lastTick, nativeTicks, NativeBurstBytes))
                {
                    continue;
                }
                NativeHeap.Trim();
                (nativeTrimmedAt, nativeTicks) = (previous, 0);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
