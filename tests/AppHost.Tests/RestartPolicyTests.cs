using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using Aspire.Hosting.Testing;
using Microsoft.Extensions.DependencyInjection;
using Platform.AppHost;
using Platform.Restarts;
using Platform.Testing;

namespace Platform.AppHost.Tests;

/// <summary>
/// <c>WithRestartPolicy</c> on real executables that DCP runs: crashes are restarted with backoff, a stop by a person
/// is not undone, and a resource that never becomes healthy is left stopped with its reason.
/// </summary>
public sealed class RestartPolicyTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private static readonly RestartPolicy Fast = RestartPolicyExtensions.DefaultPolicy with
    {
        InitialBackoff = TimeSpan.FromMilliseconds(200),
        MaxBackoff = TimeSpan.FromMilliseconds(400),
    };

    [Fact]
    public async Task A_killed_resource_is_started_again_and_its_restarts_are_counted()
    {
        await using var builder = DistributedApplicationTestingBuilder.Create();
        var agent = builder.AddExecutable("agent", "sleep", "/", "300").WithRestartPolicy(Fast);
        var bystander = builder.AddExecutable("bystander", "sleep", "/", "300").WithRestartPolicy(Fast);
        await using var app = await builder.BuildAsync();
        await app.StartAsync();
        var notifications = app.ResourceNotifications;
        var first = await RunningPidAsync(notifications, "agent");
        var other = await RunningPidAsync(notifications, "bystander");

        AppHostProcess.Signal(first, AppHostProcess.SIGKILL);
        var restarted = await notifications.WaitForResourceAsync("agent",
            e => Restarts(e.Snapshot) == 1 && e.Snapshot.State?.Text == KnownResourceStates.Running && Pid(e.Snapshot) is { } pid && pid != first)
            .WaitAsync(Timeout);
        Assert.True(ProcessControl.ProcFs.Identify(Pid(restarted.Snapshot)!.Value) is not null);

        AppHostProcess.Signal(Pid(restarted.Snapshot)!.Value, AppHostProcess.SIGKILL);
        await notifications.WaitForResourceAsync("agent", e => Restarts(e.Snapshot) == 2 && e.Snapshot.State?.Text == KnownResourceStates.Running).WaitAsync(Timeout);

        Assert.Equal(other, await RunningPidAsync(notifications, "bystander")); // untouched
    }

    [Fact]
    public async Task A_stop_from_the_dashboard_is_not_undone_and_a_start_from_it_stands()
    {
        await using var builder = DistributedApplicationTestingBuilder.Create();
        builder.AddExecutable("agent", "sleep", "/", "300").WithRestartPolicy(Fast);
        await using var app = await builder.BuildAsync();
        await app.StartAsync();
        var notifications = app.ResourceNotifications;
        await RunningPidAsync(notifications, "agent");
        var commands = app.Services.GetRequiredService<ResourceCommandService>();

        var stop = await commands.ExecuteCommandAsync("agent", KnownResourceCommands.StopCommand);
        Assert.True(stop.Success, stop.Message);
        await notifications.WaitForResourceAsync("agent", e => IsStopped(e.Snapshot)).WaitAsync(Timeout);

        // Ten backoffs later it is still stopped, and nothing counted a restart.
        await Task.Delay(Fast.MaxBackoff * 10);
        var now = await notifications.WaitForResourceAsync("agent", _ => true).WaitAsync(Timeout);
        Assert.True(IsStopped(now.Snapshot), $"the stopped resource is {now.Snapshot.State?.Text}");
        Assert.Equal(0, Restarts(now.Snapshot));

        var start = await commands.ExecuteCommandAsync("agent", KnownResourceCommands.StartCommand);
        Assert.True(start.Success, start.Message);
        var pid = await RunningPidAsync(notifications, "agent");
        Assert.NotNull(ProcessControl.ProcFs.Identify(pid));
    }

    [Fact]
    public async Task A_resource_that_never_becomes_healthy_is_left_stopped_with_its_reason()
    {
        await using var builder = DistributedApplicationTestingBuilder.Create();
        builder.AddExecutable("broken", "sh", "/", "-c", "echo cannot start >&2; exit 3")
            .WithHttpEndpoint(name: "http")
            .WithHttpHealthCheck("/health", endpointName: "http")
            .WithRestartPolicy(Fast, maxExitsWithoutHealth: 3);
        await using var app = await builder.BuildAsync();
        await app.StartAsync();

        var gaveUp = await app.ResourceNotifications.WaitForResourceAsync("broken",
            e => e.Snapshot.State?.Text == RestartPolicyService.GaveUpState).WaitAsync(Timeout);

        var reason = gaveUp.Snapshot.Properties.Single(p => p.Name == RestartPolicyService.ReasonProperty).Value?.ToString();
        Assert.Equal("exited 3 times without becoming healthy (last: exit code 3); left stopped", reason);
        Assert.Equal(2, Restarts(gaveUp.Snapshot));

        // DCP reports the last run's end again later, as its executable's status updates do (on a slow machine one came
        // after the verdict and replaced it with "Finished"): the verdict is put back.
        var resource = app.Services.GetRequiredService<DistributedApplicationModel>().Resources.Single(r => r.Name == "broken");
        await app.ResourceNotifications.PublishUpdateAsync(resource, s => s with { State = new ResourceStateSnapshot(KnownResourceStates.Finished, KnownResourceStateStyles.Info) });
        var restored = await app.ResourceNotifications.WaitForResourceAsync("broken",
            e => e.Snapshot.State?.Text == RestartPolicyService.GaveUpState).WaitAsync(Timeout);
        Assert.Equal(reason, restored.Snapshot.Properties.Single(p => p.Name == RestartPolicyService.ReasonProperty).Value?.ToString());

        // Five backoffs later it is still given up and was never started again (a late report of DCP's, put back at
        // once, may be the latest snapshot for a moment: the verdict is waited for, not read at an instant).
        await Task.Delay(Fast.MaxBackoff * 5);
        var now = await app.ResourceNotifications.WaitForResourceAsync("broken",
            e => e.Snapshot.State?.Text == RestartPolicyService.GaveUpState).WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(2, Restarts(now.Snapshot));
    }

    internal static int Restarts(CustomResourceSnapshot s) =>
        s.Properties.FirstOrDefault(p => p.Name == RestartPolicyService.RestartsProperty)?.Value is int n ? n : 0;

    internal static int? Pid(CustomResourceSnapshot s) =>
        s.Properties.FirstOrDefault(p => p.Name == "executable.pid")?.Value is { } v && int.TryParse(v.ToString(), out var pid) ? pid : null;

    private static bool IsStopped(CustomResourceSnapshot s) =>
        s.State?.Text == KnownResourceStates.Exited || s.State?.Text == KnownResourceStates.Finished;

    private static async Task<int> RunningPidAsync(ResourceNotificationService notifications, string name)
    {
        var running = await notifications.WaitForResourceAsync(name, e => e.Snapshot.State?.Text == KnownResourceStates.Running && Pid(e.Snapshot) is not null)
            .WaitAsync(Timeout);
        return Pid(running.Snapshot)!.Value;
    }
}
