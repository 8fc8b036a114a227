using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Platform.Launcher.V1;
using Platform.Registry.V1;
using Platform.SessionRegistry;
using Platform.Testing;

namespace Platform.Launcher.Tests;

/// <summary>The launcher with its registry down, then up: it keeps working, says Degraded, and replays.</summary>
public sealed class RegistryOutageTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly string _data = Directory.CreateTempSubdirectory("launcher-outage-").FullName;
    private readonly int _registryPort = ServiceProcess.FreePort();
    private InProcessService _launcher = null!;
    private InProcessService? _registry;
    private V1.Launcher.LauncherClient _client = null!;

    public async Task InitializeAsync()
    {
        _launcher = await InProcessService.StartAsync(_data, builder =>
        {
            builder.Configuration["services:registry:grpc:0"] = $"http://127.0.0.1:{_registryPort}";
            builder.AddLauncher();
            builder.Services.Configure<LauncherOptions>(o =>
            {
                o.DataDirectory = _data;
                o.Templates["sleeper"] = new TemplateOptions { Executable = "sleep", Args = ["300"] };
            });
        }, app => app.MapLauncher());
        _client = new V1.Launcher.LauncherClient(_launcher.NewChannel());
    }

    private Task<HealthCheckResult> SessionsHealth() =>
        _launcher.Services.GetRequiredService<SessionSync>().CheckHealthAsync(new HealthCheckContext());

    private static Task<T> EventuallyAsync<T>(Func<Task<T>> read, Func<T, bool> done) => Eventually.ValueAsync(read, done, Timeout, "the expected state");

    [Fact]
    public async Task With_the_registry_down_launches_work_and_queue_then_replay_when_it_is_back()
    {
        var first = await _client.LaunchAsync(new LaunchRequest { Template = "sleeper", Workload = "outage" });
        Assert.Equal(Instance.Types.State.Running, first.State);
        Assert.Equal("", first.SessionId);
        var degraded = await EventuallyAsync(SessionsHealth, h => h.Status == HealthStatus.Degraded);
        Assert.Contains("unreachable", degraded.Description);

        var registryData = Directory.CreateDirectory(Path.Combine(_data, "registry")).FullName;
        _registry = await InProcessService.StartAsync(registryData, builder =>
        {
            builder.AddSessionRegistry();
            builder.Services.Configure<RegistryOptions>(o => o.DataDirectory = registryData);
        }, app => app.MapSessionRegistry(), _registryPort);
        var registry = new Registry.V1.SessionRegistry.SessionRegistryClient(_registry.NewChannel());

        var replayed = await EventuallyAsync(() => _client.GetInstanceAsync(new GetInstanceRequest { Id = first.Id }).ResponseAsync, i => i.SessionId.Length > 0);
        var session = await registry.GetSessionAsync(new GetSessionRequest { Id = replayed.SessionId });
        Assert.Equal((Session.Types.State.Active, "outage", first.Id, first.Pid), (session.State, session.Workload, session.Instance, session.Pid));
        await EventuallyAsync(SessionsHealth, h => h.Status == HealthStatus.Healthy);

        // Back to normal: the session exists before the child starts (PLATFORM_SESSION_ID), and ends with it.
        var second = await _client.LaunchAsync(new LaunchRequest { Template = "sleeper", Workload = "outage" });
        Assert.NotEqual("", second.SessionId);
        var environ = await ProcessEnvironment.ReadAsync(second.Pid);
        Assert.Contains($"PLATFORM_SESSION_ID={second.SessionId}", environ);
        Assert.Contains($"PLATFORM_INSTANCE_ID={second.Id}", environ);

        await _client.StopInstanceAsync(new StopInstanceRequest { Id = first.Id });
        var ended = await EventuallyAsync(() => registry.GetSessionAsync(new GetSessionRequest { Id = replayed.SessionId }).ResponseAsync,
            s => s.State != Session.Types.State.Active);
        Assert.Equal(Session.Types.State.Ended, ended.State);
        Assert.Contains("signal 15", ended.EndReason);
    }

    public async Task DisposeAsync()
    {
        foreach (var instance in (await _client.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running })).Instances)
            await _client.StopInstanceAsync(new StopInstanceRequest { Id = instance.Id });
        await _launcher.DisposeAsync();
        if (_registry is not null) await _registry.DisposeAsync();
        try { Directory.Delete(_data, recursive: true); } catch (IOException) { }
    }
}
