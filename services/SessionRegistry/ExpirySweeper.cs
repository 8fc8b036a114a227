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

    /// <summary>Whether this process holds the sweeper lock.</summary>
    public bool IsLeader { get; private set; }

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
                    var leader = await engine.MaintainAsync(_holder, stoppingToken);
                    if (leader != IsLeader) logger.LogInformation(leader ? "This registry ({Holder}) now sweeps expired leases" : "Another registry holds the sweeper lock ({Holder})", _holder);
                    IsLeader = leader;
                    lastRenewal = now;
                }

                if (IsLeader)
                {
                    var expired = engine.Leases.Expired(now);
                    if (expired.Count > 0)
                    {
                        var count = await engine.ExpireAsync(expired, stoppingToken);
                        if (count > 0) logger.LogInformation("Expired {Count} sessions whose lease ran out", count);
                    }
                }

                await Task.Delay(settings.SweepInterval, time, stoppingToken);
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

        if (!IsLeader) return;
        try
        {
            // The writer stops after the sweeper (hosted services stop in reverse order), so it still takes this.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await engine.ReleaseLeadershipAsync(_holder, timeout.Token);
            IsLeader = false;
        }
        catch (Exception e) when (e is OperationCanceledException or Grpc.Core.RpcException)
        {
            logger.LogWarning("Could not give the sweeper lock up; another registry takes over when it expires");
        }
    }
}
