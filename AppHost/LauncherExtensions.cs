using Aspire.Hosting.ApplicationModel;
using Grpc.Net.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Platform.Launcher.V1;

namespace Aspire.Hosting;

public static class LauncherExtensions
{
    /// <summary>
    /// The Launcher's instances outlive the Launcher by design: a restarted Launcher re-adopts them. Two things in
    /// Aspire work against that, and this fixes both:
    /// <list type="bullet">
    /// <item>DCP stops an executable with its whole process tree, and the instances are the Launcher's children. The
    /// dashboard's Stop and Restart of the Launcher therefore send SIGTERM to the Launcher alone (its instances are
    /// re-parented and keep running), and fall back to DCP's stop only if it does not exit within 30 s.</item>
    /// <item>When the whole AppHost stops (Ctrl+C, SIGTERM) the instances must stop too: first the resources that wait
    /// for the Launcher (the Supervisor, which would start them again), then every running instance through the
    /// Launcher's own StopInstance (the tree stop with its grace).</item>
    /// </list>
    /// </summary>
    public static IResourceBuilder<ProjectResource> KeepsItsInstancesAcrossItsRestarts(this IResourceBuilder<ProjectResource> launcher)
    {
        var replaced = false;
        // DCP adds the lifecycle commands when it prepares the resources, before the first start.
        launcher.ApplicationBuilder.Eventing.Subscribe<BeforeResourceStartedEvent>(launcher.Resource, (_, _) =>
        {
            if (!replaced)
            {
                replaced = true;
                ReplaceCommand(launcher.Resource, KnownResourceCommands.StopCommand, restart: false);
                ReplaceCommand(launcher.Resource, KnownResourceCommands.RestartCommand, restart: true);
            }
            return Task.CompletedTask;
        });
        launcher.ApplicationBuilder.Services.AddHostedService(sp => new LauncherShutdown(
            launcher.Resource,
            sp.GetRequiredService<DistributedApplicationModel>(),
            sp.GetRequiredService<ResourceCommandService>(),
            sp.GetRequiredService<Platform.AppHost.PlatformState>(),
            sp.GetRequiredService<ILogger<LauncherShutdown>>()));
        return launcher;
    }

    private static void ReplaceCommand(IResource resource, string name, bool restart)
    {
        var original = resource.Annotations.OfType<ResourceCommandAnnotation>().SingleOrDefault(a => a.Name == name);
        if (original is null) return;
        var index = resource.Annotations.IndexOf(original);
        resource.Annotations[index] = new ResourceCommandAnnotation(
            original.Name, original.DisplayName, original.UpdateState,
            async context =>
            {
                if (!await StopRootOnlyAsync(resource, context.Services, context.CancellationToken)) return await original.ExecuteCommand(context);
                if (!restart) return new ExecuteCommandResult { Success = true, Message = $"Stopped {resource.Name}; its instances keep running" };
                var commands = context.Services.GetRequiredService<ResourceCommandService>();
                return await commands.ExecuteCommandAsync(resource, KnownResourceCommands.StartCommand, context.CancellationToken);
            },
            original.DisplayDescription, original.Arguments, original.ConfirmationMessage, original.IconName, original.IconVariant, original.IsHighlighted,
            original.Visibility, original.ValidateArguments);
    }

    /// <summary>A Launcher with supervised instances can take 15-20 s to stop gracefully; Kestrel's own limit is 30 s.</summary>
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    /// <summary>SIGTERM to the resource's process alone; true once it has stopped.</summary>
    private static async Task<bool> StopRootOnlyAsync(IResource resource, IServiceProvider services, CancellationToken cancellationToken)
    {
        var notifications = services.GetRequiredService<ResourceNotificationService>();
        var current = await notifications.WaitForResourceAsync(resource.Name, _ => true, cancellationToken);
        if (Platform.AppHost.ResourceSnapshots.Pid(current.Snapshot) is not { } pid || Platform.ProcessControl.ProcFs.Identify(pid) is not { } process)
            return false;
        services.GetService<Platform.AppHost.RestartPolicyService>()?.ExpectStop(resource);
        if (!Platform.ProcessControl.ProcessTree.Signal(process, 15)) return false; // SIGTERM, to that process alone
        try
        {
            await notifications.WaitForResourceAsync(resource.Name, e => Platform.AppHost.ResourceSnapshots.IsStopped(e.Snapshot.State?.Text), cancellationToken)
                .WaitAsync(StopTimeout, cancellationToken);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }
}

internal sealed class LauncherShutdown(
    ProjectResource launcher,
    DistributedApplicationModel model,
    ResourceCommandService commands,
    Platform.AppHost.PlatformState state,
    ILogger<LauncherShutdown> logger) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        var endpoint = launcher.GetEndpoint("grpc");
        if (!endpoint.IsAllocated) return;
        try
        {
            var dependents = model.Resources.Where(r => r.Annotations.OfType<WaitAnnotation>().Any(w => w.Resource == launcher));
            await Task.WhenAll(dependents.Select(r => commands.ExecuteCommandAsync(r, KnownResourceCommands.StopCommand, cancellationToken)));

            using var channel = GrpcChannel.ForAddress(endpoint.Url, new GrpcChannelOptions
            {
                Credentials = Grpc.Core.ChannelCredentials.Create(Grpc.Core.ChannelCredentials.Insecure,
                    Grpc.Core.CallCredentials.FromInterceptor((_, metadata) =>
                    {
                        metadata.Add("authorization", $"Bearer {state.Token}");
                        return Task.CompletedTask;
                    })),
                UnsafeUseInsecureChannelCallCredentials = true, // loopback, cleartext HTTP/2
            });
            var client = new Platform.Launcher.V1.Launcher.LauncherClient(channel);
            var running = new List<Instance>();
            var page = "";
            do
            {
                var reply = await client.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000, PageToken = page },
                    deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: cancellationToken);
                running.AddRange(reply.Instances);
                page = reply.NextPageToken;
            } while (page.Length > 0);
            if (running.Count == 0) return;
            await Task.WhenAll(running.Select(i => client.StopInstanceAsync(new StopInstanceRequest { Id = i.Id }, cancellationToken: cancellationToken).ResponseAsync));
            logger.LogInformation("Stopped {Count} instance(s) the launcher was running", running.Count);
        }
        catch (Exception e) when (e is Grpc.Core.RpcException or OperationCanceledException or InvalidOperationException)
        {
            logger.LogWarning("Could not stop the launcher's instances: {Error}", e.Message);
        }
    }
}
