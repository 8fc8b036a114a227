using Google.Protobuf.WellKnownTypes;
using Microsoft.Extensions.DependencyInjection;
using Platform.Monitor.V1;
using Platform.Registry.V1;
using Platform.SessionRegistry;
using Platform.Testing;
using State = Platform.Monitor.V1.AgentStatus.Types.State;

namespace Platform.AgentMonitor.Tests;

/// <summary>Targets from a real registry (in this process, over gRPC, on a real SQLite file).</summary>
public sealed class DiscoveryTests : MonitorTestBase
{
    private InProcessService _registry = null!;
    private Registry.V1.SessionRegistry.SessionRegistryClient _sessions = null!;

    public override async Task InitializeAsync()
    {
        var directory = Path.Combine(DataDirectory, "registry");
        Directory.CreateDirectory(directory);
        _registry = await InProcessService.StartAsync(directory, b =>
        {
            b.AddSessionRegistry();
            b.Services.Configure<RegistryOptions>(o => o.DataDirectory = directory);
        }, app => app.MapSessionRegistry());
        _sessions = new(_registry.NewChannel());
        await base.InitializeAsync();
    }

    protected override void Configure(MonitorOptions options) => options.DiscoverFromRegistry = true;

    protected override void ConfigureHost(Microsoft.AspNetCore.Builder.WebApplicationBuilder builder) =>
        builder.Configuration["services:registry:grpc:0"] = _registry.Address;

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await _registry.DisposeAsync();
    }

    [Fact]
    public async Task A_session_with_a_probe_spec_becomes_a_target_and_leaves_when_it_ends()
    {
        var before = await _sessions.RegisterSessionAsync(new RegisterSessionRequest { Workload = "early", Instance = "0", Pid = Environment.ProcessId,
            Attributes = { ["platform.monitor/probe"] = """{"process":{},"interval":"0.1s"}""" } });
        var sleeper = Spawn("sleep", "300");
        var session = await _sessions.RegisterSessionAsync(new RegisterSessionRequest
        {
            Workload = "agents", Instance = "a1", Pid = sleeper.Pid, Labels = { ["team"] = "blue" },
            Attributes = { ["platform.monitor/probe"] = """{"process":{},"interval":"0.1s","failureThreshold":1}""" },
        });
        var plain = await _sessions.RegisterSessionAsync(new RegisterSessionRequest { Workload = "agents", Instance = "a2", Pid = sleeper.Pid });
        var broken = await _sessions.RegisterSessionAsync(new RegisterSessionRequest { Workload = "agents", Instance = "a3",
            Attributes = { ["platform.monitor/probe"] = """{"process":{"pid":"x"}}""" } });

        var id = "session/" + session.Id;
        var status = await StatusAsync(id, State.Healthy);
        Assert.Equal("agents", status.Workload);
        await StatusAsync("session/" + before.Id, State.Healthy);
        var target = (await Client.ListTargetsAsync(new ListTargetsRequest { Workload = "agents" })).Targets.Single();
        Assert.Equal(session.Id, target.SessionId);
        Assert.Equal(sleeper.Pid, target.Process.Pid);
        Assert.Equal("blue", target.Labels["team"]);

        ProcessTree_Stop(sleeper);
        await StatusAsync(id, State.Unhealthy);

        await _sessions.EndSessionAsync(new EndSessionRequest { Id = session.Id, Reason = "done" });
        await Eventually.ValueAsync(async () => (await Client.ListTargetsAsync(new ListTargetsRequest { Workload = "agents" })).Targets.Count,
            n => n == 0, Timeout, "the ended session's target to go");
        Assert.NotNull(plain);
        Assert.NotNull(broken);
    }

    private static void ProcessTree_Stop(Platform.ProcessControl.SpawnedProcess process) =>
        Platform.ProcessControl.ProcessTree.Signal(process.Identity, 9);

    [Fact]
    public async Task Registry_heartbeat_is_healthy_while_renewed_and_unhealthy_when_renewals_stop()
    {
        var session = await _sessions.RegisterSessionAsync(new RegisterSessionRequest { Workload = "hb", Instance = "0", Ttl = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)) });
        var target = NewTarget("lease");
        target.RegistryHeartbeat = new RegistryHeartbeatProbe { SessionId = session.Id, MaxAge = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)) };
        await AddAsync(target);

        using var renewing = new CancellationTokenSource();
        var renewals = Task.Run(async () =>
        {
            while (!renewing.IsCancellationRequested)
            {
                await _sessions.HeartbeatAsync(new HeartbeatRequest { Ids = { session.Id } });
                await Task.Delay(200);
            }
        });
        await StatusAsync("lease", State.Healthy);
        // Longer than max_age (1 s) of probes every 100 ms: healthy throughout, since the lease is renewed.
        Assert.All(await ProbedAsync("lease", 15), status => Assert.Equal(State.Healthy, status.State));
        await renewing.CancelAsync();
        await renewals;
        Assert.Contains("last heartbeat", (await StatusAsync("lease", State.Unhealthy)).Detail);

        await _sessions.EndSessionAsync(new EndSessionRequest { Id = session.Id, Reason = "bye" });
        var unknownSession = NewTarget("gone");
        unknownSession.RegistryHeartbeat = new RegistryHeartbeatProbe { SessionId = "01JZZZZZZZZZZZZZZZZZZZZZZZ" };
        await AddAsync(unknownSession);
        Assert.Contains("no session", (await StatusAsync("gone", State.Unhealthy)).Detail);
    }
}
