using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Platform.ProcessControl;

namespace Platform.ServiceDefaults;

/// <summary>
/// Stops the host when the process that started it (named by <c>PLATFORM_PARENT_PID</c>, set by the AppHost) is
/// gone, so a SIGKILLed AppHost does not leave its services running as orphans that hold their ports. Watches the
/// parent through a pidfd (no polling, and no System.Diagnostics.Process in a process that may reap its children).
/// </summary>
public sealed class ParentProcessWatcher(
    IConfiguration configuration,
    IHostApplicationLifetime lifetime,
    ILogger<ParentProcessWatcher> logger) : BackgroundService
{
    public const string ParentPidVariable = "PLATFORM_PARENT_PID";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!int.TryParse(configuration[ParentPidVariable], out var parentPid) || parentPid <= 0) return;

        using var monitor = new PidfdMonitor();
        if (ProcFs.Identify(parentPid) is not { } parent)
        {
            logger.LogWarning("Parent process {ParentPid} is already gone; stopping", parentPid);
            lifetime.StopApplication();
            return;
        }

        try
        {
            await monitor.WatchAsync(parent).WaitAsync(stoppingToken);
        }
        catch (OperationCanceledException)
        {
            return;
        }

        logger.LogWarning("Parent process {ParentPid} exited; stopping", parentPid);
        lifetime.StopApplication();
    }
}
