using System.Collections.Immutable;
using System.Globalization;
using Aspire.Hosting.ApplicationModel;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Platform.AppHost;
using Platform.Manifests;
using Platform.Monitor.V1;
using Platform.Supervisor.V1;

namespace Aspire.Hosting;

/// <summary>A workload the app model declares: applied to the Supervisor, not run by DCP. The dashboard shows its
/// live phase, generation, pid, restarts, next start and the monitor's verdict, with restart, stop and start.</summary>
public sealed class WorkloadResource(string name, Workload spec) : Resource(name)
{
    public Workload Spec { get; } = spec;
}

public static class WorkloadResourceExtensions
{
    private const string ResourceType = "Workload";

    /// <summary>Declares a supervised workload: applied to <paramref name="supervisor"/> once it is healthy (again
    /// after each of its restarts), shown beside the services as a child of the supervisor.</summary>
    public static IResourceBuilder<WorkloadResource> AddWorkload(this IDistributedApplicationBuilder builder, Workload spec, IResourceBuilder<ProjectResource> supervisor)
    {
        if (!builder.Services.Any(d => d.ImplementationType == typeof(WorkloadResourceService)))
        {
            builder.Services.AddSingleton(new WorkloadSupervisor(supervisor.Resource, PlatformState.For(builder).Token));
            builder.Services.AddHostedService<WorkloadResourceService>();
        }
        var resource = new WorkloadResource(spec.Name, spec);
        return builder.AddResource(resource)
            .WithParentRelationship(supervisor)
            .WithInitialState(new CustomResourceSnapshot
            {
                ResourceType = ResourceType,
                State = new ResourceStateSnapshot("Waiting for the supervisor", KnownResourceStateStyles.Info),
                Properties = [WorkloadResourceService.Property("workload.launch", Describe(spec.Launch))],
            })
            .WithCommand("workload-restart", "Restart", context => CallAsync(context, (c, n) => c.RestartWorkloadAsync(new RestartWorkloadRequest { Name = n, Reason = "restarted from the dashboard" }).ResponseAsync),
                new CommandOptions { IconName = "ArrowCounterclockwise", Description = "Stop the workload's tree and start a new generation now" })
            .WithCommand("workload-stop", "Stop", context => CallAsync(context, (c, n) => c.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = n }).ResponseAsync, stopped: true),
                new CommandOptions { IconName = "Stop", Description = "Stop the workload (the supervisor forgets it until Start)" })
            .WithCommand("workload-start", "Start", context => CallAsync(context, (c, _) => c.ApplyWorkloadAsync(new ApplyWorkloadRequest { Workload = spec }).ResponseAsync, stopped: false),
                new CommandOptions { IconName = "Play", Description = "Apply the declared workload again" });
    }

    /// <summary>Declares every workload of a workload file (YAML or JSON, as platformctl apply reads it).</summary>
    public static IDistributedApplicationBuilder AddWorkloads(this IDistributedApplicationBuilder builder, string file, IResourceBuilder<ProjectResource> supervisor)
    {
        var root = BuildOutput.RepositoryRoot ?? Directory.GetCurrentDirectory();
        var path = Path.IsPathRooted(file) ? file : Path.Combine(root, file);
        // ${PWD} is the repository root wherever the AppHost was started; other names from the AppHost's configuration
        // (its command line and environment).
        var workloads = Manifest.Read(File.ReadAllText(path), file, name => name == "PWD" ? root : builder.Configuration[name]);
        foreach (var workload in workloads) builder.AddWorkload(workload, supervisor);
        return builder;
    }

    private static async Task<ExecuteCommandResult> CallAsync<T>(ExecuteCommandContext context, Func<global::Platform.Supervisor.V1.Supervisor.SupervisorClient, string, Task<T>> call, bool? stopped = null)
    {
        var supervisor = context.Services.GetRequiredService<WorkloadSupervisor>();
        try
        {
            using var channel = supervisor.Channel(supervisor.Target);
            await call(new global::Platform.Supervisor.V1.Supervisor.SupervisorClient(channel), context.ResourceName);
            // A stop is kept across restarts of the supervisor (not applied again) until Start.
            if (stopped == true) supervisor.Stopped.TryAdd(context.ResourceName, 0);
            if (stopped == false) supervisor.Stopped.TryRemove(context.ResourceName, out _);
            return CommandResults.Success();
        }
        catch (RpcException e)
        {
            return CommandResults.Failure($"{e.StatusCode}: {e.Status.Detail}");
        }
    }

    internal static string Describe(global::Platform.Launcher.V1.LaunchSpec launch) => launch.SourceCase == global::Platform.Launcher.V1.LaunchSpec.SourceOneofCase.Template
        ? $"template {launch.Template}"
        : string.Join(' ', new[] { launch.Process?.Executable ?? "" }.Concat(launch.Process?.Args ?? []));
}

/// <summary>Where the declared workloads go: the supervisor resource, the run's token, and those stopped from the dashboard.</summary>
internal sealed class WorkloadSupervisor(ProjectResource supervisor, string token)
{
    public ProjectResource Target { get; } = supervisor;

    public System.Collections.Concurrent.ConcurrentDictionary<string, byte> Stopped { get; } = new(StringComparer.Ordinal);

    /// <summary>A channel to a platform resource's grpc endpoint that carries the run's token.</summary>
    public GrpcChannel Channel(ProjectResource resource) => GrpcChannel.ForAddress(resource.GetEndpoint("grpc").Url, new GrpcChannelOptions
    {
        Credentials = ChannelCredentials.Create(ChannelCredentials.Insecure, CallCredentials.FromInterceptor((_, metadata) =>
        {
            metadata.Add("authorization", $"Bearer {token}");
            return Task.CompletedTask;
        })),
        UnsafeUseInsecureChannelCallCredentials = true, // loopback, cleartext HTTP/2
    });
}

/// <summary>
/// Applies the declared workloads whenever the supervisor becomes healthy (so again after its restarts: an unchanged
/// apply is no change), then follows them (WatchWorkloads, and the monitor's WatchStatuses for the verdicts) and
/// publishes each change as the resource's state and properties. Stops with the AppHost.
/// </summary>
internal sealed class WorkloadResourceService(
    DistributedApplicationModel model,
    ResourceNotificationService notifications,
    WorkloadSupervisor supervisor,
    ILogger<WorkloadResourceService> logger) : BackgroundService
{
    private readonly Dictionary<string, Workload> _latest = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Dictionary<string, AgentStatus>> _verdicts = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var declared = model.Resources.OfType<WorkloadResource>().ToDictionary(r => r.Name, StringComparer.Ordinal);
        if (declared.Count == 0) return;
        var monitor = model.Resources.OfType<ProjectResource>().FirstOrDefault(r => r.Name == "monitor");
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await notifications.WaitForResourceHealthyAsync(supervisor.Target.Name, stoppingToken);
                using var channel = supervisor.Channel(supervisor.Target);
                var client = new global::Platform.Supervisor.V1.Supervisor.SupervisorClient(channel);
                using var watch = client.WatchWorkloads(new WatchWorkloadsRequest(), cancellationToken: stoppingToken);
                await watch.ResponseHeadersAsync;
                foreach (var resource in declared.Values)
                {
                    if (supervisor.Stopped.ContainsKey(resource.Name))
                    {
                        await PublishAsync(resource, null);
                        continue;
                    }
                    try
                    {
                        await PublishAsync(resource, await client.ApplyWorkloadAsync(new ApplyWorkloadRequest { Workload = resource.Spec }, cancellationToken: stoppingToken));
                    }
                    catch (RpcException e) when (e.StatusCode is not (StatusCode.Unavailable or StatusCode.Cancelled))
                    {
                        logger.LogWarning("Workload {Workload} was not applied: {Status}: {Detail}", resource.Name, e.StatusCode, e.Status.Detail);
                        await notifications.PublishUpdateAsync(resource, s => s with { State = new ResourceStateSnapshot($"Not applied: {e.Status.Detail}", KnownResourceStateStyles.Error) });
                    }
                }
                using var verdicts = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                var following = monitor is null ? Task.CompletedTask : FollowVerdictsAsync(monitor, declared, verdicts.Token);
                try
                {
                    await foreach (var e in watch.ResponseStream.ReadAllAsync(stoppingToken))
                        if (declared.TryGetValue(e.Workload.Name, out var resource))
                            await PublishAsync(resource, e.Workload.Status is { Phase: WorkloadStatus.Types.Phase.Stopped, Message: "deleted" } ? null : e.Workload);
                }
                finally
                {
                    await verdicts.CancelAsync();
                    await following;
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is RpcException or InvalidOperationException or HttpRequestException)
            {
                // The supervisor restarts (its health says when it is back) or is gone for now.
                logger.LogDebug("Following the declared workloads: {Error}", e.Message);
            }
            try { await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken); }
            catch (OperationCanceledException) { return; }
        }
    }

    private async Task FollowVerdictsAsync(ProjectResource monitor, Dictionary<string, WorkloadResource> declared, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            try
            {
                using var channel = supervisor.Channel(monitor);
                var client = new AgentMonitor.AgentMonitorClient(channel);
                using var watch = client.WatchStatuses(new WatchStatusesRequest { IncludeCurrent = true }, cancellationToken: token);
                await foreach (var status in watch.ResponseStream.ReadAllAsync(token))
                {
                    if (!declared.TryGetValue(status.Workload, out var resource)) continue;
                    Workload? latest;
                    lock (_lock)
                    {
                        if (!_verdicts.TryGetValue(status.Workload, out var of)) _verdicts[status.Workload] = of = new(StringComparer.Ordinal);
                        // Only the current generation's targets speak (older ones are being removed).
                        of[status.TargetId] = status;
                        latest = _latest.GetValueOrDefault(status.Workload);
                    }
                    if (latest is not null) await PublishAsync(resource, latest);
                }
            }
            catch (Exception e) when (!token.IsCancellationRequested)
            {
                logger.LogDebug("Following the monitor's verdicts: {Error}", e.Message);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            try { await Task.Delay(TimeSpan.FromSeconds(1), token); }
            catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>The workload as the dashboard shows it; null: not applied (stopped from the dashboard, or deleted).</summary>
    private Task PublishAsync(WorkloadResource resource, Workload? workload)
    {
        string verdict;
        lock (_lock)
        {
            if (workload is null) _latest.Remove(resource.Name);
            else _latest[resource.Name] = workload;
            var generation = workload?.Status?.Generation.ToString(CultureInfo.InvariantCulture);
            var current = _verdicts.GetValueOrDefault(resource.Name)?.Values
                .Where(v => v.Labels.GetValueOrDefault("platform.supervisor/generation") == generation).ToList() ?? [];
            verdict = current.Count == 0 ? "-" : string.Join(", ", current.Select(v => $"{v.Labels.GetValueOrDefault("platform.supervisor/check", v.TargetId)}: {Name(AgentStatus.Descriptor, "State", (int)v.State)}{(v.Detail.Length > 0 ? $" ({v.Detail})" : "")}"));
        }
        if (workload is null)
            return notifications.PublishUpdateAsync(resource, s => s with
            {
                State = new ResourceStateSnapshot("Stopped", KnownResourceStateStyles.Info),
                Properties = Set(s.Properties, [("platform.pid", "-"), ("platform.message", "not applied: stopped from the dashboard, or deleted (Start applies it again)")]),
            });
        var status = workload.Status ?? new WorkloadStatus();
        var (text, style) = status.Phase switch
        {
            WorkloadStatus.Types.Phase.Running => ("Running", KnownResourceStateStyles.Success),
            WorkloadStatus.Types.Phase.Pending => ("Starting", KnownResourceStateStyles.Info),
            WorkloadStatus.Types.Phase.BackingOff => ("Backing off", KnownResourceStateStyles.Warn),
            WorkloadStatus.Types.Phase.CoolingOff => ("Cooling off", KnownResourceStateStyles.Warn),
            WorkloadStatus.Types.Phase.Failed => ("Failed", KnownResourceStateStyles.Error),
            _ => ("Stopped", KnownResourceStateStyles.Info),
        };
        var exit = status.LastExit is { } e ? $"{(e.HasExitCode ? $"code {e.ExitCode}" : e.HasSignal ? $"signal {e.Signal}" : "")} {e.Reason}".Trim() : "-";
        return notifications.PublishUpdateAsync(resource, s => s with
        {
            State = new ResourceStateSnapshot(text, style),
            StartTimeStamp = workload.CreateTime?.ToDateTime(),
            Properties = Set(s.Properties,
            [
                ("platform.phase", Name(WorkloadStatus.Descriptor, "Phase", (int)status.Phase)),
                ("platform.generation", status.Generation.ToString(CultureInfo.InvariantCulture)),
                ("platform.pid", status.Pid == 0 ? "-" : status.Pid.ToString(CultureInfo.InvariantCulture)),
                ("platform.restarts", status.TotalRestarts.ToString(CultureInfo.InvariantCulture)),
                ("platform.restart.count", status.RestartCount.ToString(CultureInfo.InvariantCulture)),
                ("platform.restart.next", status.NextRestartTime is { } next ? next.ToDateTimeOffset().ToString("O", CultureInfo.InvariantCulture) : "-"),
                ("platform.instance", status.InstanceId.Length == 0 ? "-" : status.InstanceId),
                ("platform.last-exit", exit),
                ("platform.verdict", verdict),
                ("platform.message", status.Message),
                ("platform.trace-id", status.TraceId),
            ]),
        });
    }

    /// <summary>An enum value as the contract spells it (IDLE, BACKING_OFF).</summary>
    private static string Name(Google.Protobuf.Reflection.MessageDescriptor message, string type, int value) =>
        message.FindDescriptor<Google.Protobuf.Reflection.EnumDescriptor>(type).FindValueByNumber(value)?.Name ?? value.ToString(CultureInfo.InvariantCulture);

    private static ImmutableArray<ResourcePropertySnapshot> Set(ImmutableArray<ResourcePropertySnapshot> properties, (string Name, string Value)[] values)
    {
        var names = values.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        return [.. properties.Where(p => !names.Contains(p.Name)), .. values.Select(v => Property(v.Name, v.Value))];
    }

    /// <summary>How the dashboard labels the properties; highlighted ones are shown without "show all".</summary>
    private static readonly Dictionary<string, string> DisplayNames = new(StringComparer.Ordinal)
    {
        ["platform.phase"] = "Phase",
        ["platform.generation"] = "Generation",
        ["platform.pid"] = "Pid",
        ["platform.restarts"] = "Restarts",
        ["platform.restart.count"] = "Restarts counted against the limit",
        ["platform.restart.next"] = "Next start at",
        ["platform.instance"] = "Instance",
        ["platform.last-exit"] = "Last exit",
        ["platform.verdict"] = "Monitor's verdict",
        ["platform.message"] = "Message",
        ["platform.trace-id"] = "Trace id",
        ["workload.launch"] = "Launch",
    };

    internal static ResourcePropertySnapshot Property(string name, string value) =>
        new(name, value) { DisplayName = DisplayNames.GetValueOrDefault(name), IsHighlighted = true };
}
