using Microsoft.Extensions.Options;

namespace Platform.SessionRegistry;

/// <summary>
/// Marks sessions whose lease ran out as EXPIRED. One per store: it sweeps only while it holds the store's leader
/// lock (renewed well within <see cref="RegistryOptions.LeaderLease"/>), so several replicas on one store (the
/// PostgreSQL store) never sweep twice. Starts and stops with the host; time comes from <see cref="TimeProvider"/>.
/// </summary>
public sealed class ExpirySweeper(
    RegistryEngine engine,
    IOptions<RegistryOptions> options,
    TimeProvider time,
    ILogger<ExpirySweeper> logger) : BackgroundService
{
    private readonly string _holder = $"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid():N}";

    private bool _leader;
    private DateTimeOffset _leaderUntil;

    /// <summary>Whether this process holds the sweeper lock: it took or renewed it, and the lease it took it for has
    /// not run out since (counted from before it asked, so never past the lock's expiry in the store). A sweeper whose
    /// renewal is late stops sweeping before another can take the lock.</summary>
    public bool IsLeader => _leader && time.GetUtcNow() < _leaderUntil;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var settings = options.Value;
        var renewEvery = settings.LeaderLease / 3;
        var lastRenewal = DateTimeOffset.MinValue;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                var now = time.GetUtcNow();
                if (now - lastRenewal >= renewEvery)
                {
                    var was = IsLeader;
                    var leader = await engine.MaintainAsync(_holder, stoppingToken);
                    if (leader != was) logger.LogInformation(leader ? "This registry ({Holder}) now sweeps expired leases" : "Another registry holds the sweeper lock ({Holder})", _holder);
                    (_leader, _leaderUntil) = (leader, now + settings.LeaderLease);
                    lastRenewal = now;
                }

                // Asleep until the first lease runs out or the lock is due, but at least a SweepInterval. Armed before
                // the scan, so that a lease the scan misses (added after it) wakes the sweeper if it runs out before
                // the lock is due (LeaseTable.LookingAt). At rest it wakes for the lock alone, and an expiry is still
                // seen within a SweepInterval.
                var wake = lastRenewal + renewEvery;
                var sooner = engine.Leases.LookingAt(wake);
                if (IsLeader)
                {
                    // On replicas sharing a store, a lease is expired only ExpiryGrace after it ran out here: a renewal
                    // made on another replica reaches this one that much later (RegistryOptions.HeartbeatFlushInterval).
                    var grace = engine.ExpiryGrace;
                    var expired = engine.Leases.Expired(now - grace, out var next);
                    if (next is { } first && first + grace < wake) wake = first + grace;
                    if (expired.Count > 0)
                    {
                        var count = await engine.ExpireAsync(expired, stoppingToken);
                        if (count > 0) logger.LogInformation("Expired {Count} sessions whose lease ran out", count);
                        wake = now; // what expired meanwhile is looked at after a SweepInterval
                    }
                }

                var pause = wake - time.GetUtcNow();
                if (pause < settings.SweepInterval)
                {
                    await Task.Delay(settings.SweepInterval, time, stoppingToken);
                    continue;
                }
                using var napping = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                await Task.WhenAny(Task.Delay(pause, time, napping.Token), sooner);
                napping.Cancel(); // the delay's timer goes with it
                stoppingToken.ThrowIfCancellationRequested();
                if (sooner.IsCompleted) await Task.Delay(settings.SweepInterval, time, stoppingToken); // sweeps stay a SweepInterval apart
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Platform.ServiceDefaults.PlatformException e)
            {
                // The store refused a write; try again on the next tick.
                logger.LogWarning("Sweep failed: {Error}", e.Message);
                await Task.Delay(settings.SweepInterval, time, stoppingToken).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }

        if (!_leader) return;
        try
        {
            // The writer stops after the sweeper (hosted services stop in reverse order), so it still takes this.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await engine.ReleaseLeadershipAsync(_holder, timeout.Token);
            _leader = false;
        }
        catch (Exception e) when (e is OperationCanceledException or Grpc.Core.RpcException)
        {
            logger.LogWarning("Could not give the sweeper lock up; another registry takes over when it expires");
        }
    }
}
