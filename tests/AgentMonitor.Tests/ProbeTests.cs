using System.Net;
using System.Net.Sockets;
using Google.Protobuf.WellKnownTypes;
using Grpc.Health.V1;
using Grpc.HealthCheck;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Platform.Monitor.V1;
using Platform.ProcessControl;
using Platform.Testing;
using State = Platform.Monitor.V1.AgentStatus.Types.State;

namespace Platform.AgentMonitor.Tests;

public sealed class ProcessProbeTests : MonitorTestBase
{
    [Fact]
    public async Task A_live_process_is_healthy_and_one_that_exited_is_unhealthy_after_the_threshold()
    {
        var sleeper = Spawn("sleep", "300");
        var target = NewTarget("proc", failureThreshold: 3);
        target.Process = new ProcessProbe { Pid = sleeper.Pid, StartTimeTicks = sleeper.Identity.StartTime };
        await AddAsync(target);
        var healthy = await StatusAsync("proc", State.Healthy);
        Assert.Contains($"pid {sleeper.Pid} is running", healthy.Detail);
        Assert.NotNull(healthy.LastProbeTime);
        Assert.NotNull(healthy.LastProbeDuration);

        ProcessTree.Signal(sleeper.Identity, 9);
        await sleeper.Exited.WaitAsync(Timeout);
        var dead = await StatusAsync("proc", State.Unhealthy);
        Assert.Equal(3, dead.ConsecutiveFailures);
        Assert.Contains($"no process with pid {sleeper.Pid}", dead.Detail);
    }

    [Fact]
    public async Task A_zombie_a_stopped_process_and_a_reused_pid_are_unhealthy()
    {
        // The child exits at once and its parent (exec'd into sleep) never reaps it: a zombie.
        var pidFile = Path.Combine(DataDirectory, "zombie.pid");
        Spawn("/bin/sh", "-c", $"sleep 0.05 & echo $! > {pidFile}; exec sleep 300");
        var zombiePid = int.Parse((await Eventually.ValueAsync(() => File.Exists(pidFile) ? File.ReadAllTextAsync(pidFile) : Task.FromResult(""),
            text => text.EndsWith('\n'), Timeout, "the zombie's pid")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        await Eventually.ValueAsync(() => Task.FromResult(ProcFs.ReadStat(zombiePid)), s => s is { IsZombie: true }, Timeout, "the child to become a zombie");
        var zombie = NewTarget("zombie");
        zombie.Process = new ProcessProbe { Pid = zombiePid };
        await AddAsync(zombie);
        Assert.Contains("zombie", (await StatusAsync("zombie", State.Unhealthy)).Detail);

        var stopped = Spawn("sleep", "300");
        var target = NewTarget("stopped");
        target.Process = new ProcessProbe { Pid = stopped.Pid };
        await AddAsync(target);
        await StatusAsync("stopped", State.Healthy);
        ProcessTree.Signal(stopped.Identity, 19); // SIGSTOP
        Assert.Contains("is stopped", (await StatusAsync("stopped", State.Unhealthy)).Detail);
        ProcessTree.Signal(stopped.Identity, 18); // SIGCONT
        await StatusAsync("stopped", State.Healthy);

        var other = NewTarget("reused");
        other.Process = new ProcessProbe { Pid = stopped.Pid, StartTimeTicks = stopped.Identity.StartTime + 1 };
        await AddAsync(other);
        Assert.Contains("another process", (await StatusAsync("reused", State.Unhealthy)).Detail);
    }

    [Fact]
    public async Task Watch_streams_transitions_only_first_the_current_status()
    {
        var sleeper = Spawn("sleep", "300");
        var target = NewTarget("watched");
        target.Process = new ProcessProbe { Pid = sleeper.Pid };
        await AddAsync(target);
        await StatusAsync("watched", State.Healthy);

        using var watch = Client.WatchStatuses(new WatchStatusesRequest { TargetId = "watched", IncludeCurrent = true });
        var stream = watch.ResponseStream;
        using var cts = new CancellationTokenSource(Timeout);
        Assert.True(await stream.MoveNext(cts.Token));
        Assert.Equal(State.Healthy, stream.Current.State);

        // Many probes at 100 ms pass while it stays healthy: none is streamed.
        Assert.All(await ProbedAsync("watched", 5), status => Assert.Equal(State.Healthy, status.State));
        ProcessTree.Signal(sleeper.Identity, 19);
        Assert.True(await stream.MoveNext(cts.Token));
        Assert.Equal(State.Unhealthy, stream.Current.State);
        ProcessTree.Signal(sleeper.Identity, 18);
        Assert.True(await stream.MoveNext(cts.Token));
        Assert.Equal(State.Healthy, stream.Current.State);
        Assert.Equal(0, stream.Current.ConsecutiveFailures);
    }
}

public sealed class FileProbeTests : MonitorTestBase
{
    [Fact]
    public async Task A_heartbeat_file_going_stale_is_unhealthy_and_fresh_again_healthy()
    {
        var path = Path.Combine(DataDirectory, "heartbeat");
        await File.WriteAllTextAsync(path, "");
        var target = NewTarget("heartbeat");
        target.HeartbeatFile = new HeartbeatFileProbe { Path = path, MaxAge = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)) };
        await AddAsync(target);
        await StatusAsync("heartbeat", State.Healthy);
        // Nobody touches it: after a second it is stale.
        Assert.Contains("old (max 1.0s)", (await StatusAsync("heartbeat", State.Unhealthy)).Detail);
        File.SetLastWriteTimeUtc(path, DateTime.UtcNow);
        await StatusAsync("heartbeat", State.Healthy);
        File.Delete(path);
        Assert.Contains("no heartbeat file", (await StatusAsync("heartbeat", State.Unhealthy)).Detail);
    }

    [Fact]
    public async Task A_heartbeat_file_not_written_yet_is_unknown_for_max_age_then_unhealthy_and_a_first_beat_meanwhile_is_healthy()
    {
        // An agent slow to start: no file, then a predecessor's old file, for up to max_age after the target is added.
        var path = Path.Combine(DataDirectory, "slow.beat");
        var target = NewTarget("slow");
        target.Interval = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(200));
        target.HeartbeatFile = new HeartbeatFileProbe { Path = path, MaxAge = Duration.FromTimeSpan(TimeSpan.FromSeconds(3)) };
        await AddAsync(target);
        var waiting = await Eventually.ValueAsync(() => Client.GetStatusAsync(new GetStatusRequest { TargetId = "slow" }).ResponseAsync,
            st => st.Detail.Contains("waiting up to", StringComparison.Ordinal), Timeout, "the first probe");
        Assert.Equal(State.Unknown, waiting.State);
        Assert.Contains("no heartbeat file", waiting.Detail);
        await File.WriteAllTextAsync(path, "");
        File.SetLastWriteTimeUtc(path, DateTime.UtcNow - TimeSpan.FromMinutes(1)); // a predecessor's
        await Task.Delay(500);
        var stillWaiting = await Client.GetStatusAsync(new GetStatusRequest { TargetId = "slow" });
        Assert.Equal(State.Unknown, stillWaiting.State);
        Assert.Contains("old", stillWaiting.Detail);
        File.SetLastWriteTimeUtc(path, DateTime.UtcNow); // the first beat
        await StatusAsync("slow", State.Healthy);

        // Another that never beats: UNHEALTHY once max_age has passed since it was added, not before.
        var never = NewTarget("never");
        never.Interval = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(200));
        never.HeartbeatFile = new HeartbeatFileProbe { Path = Path.Combine(DataDirectory, "never.beat"), MaxAge = Duration.FromTimeSpan(TimeSpan.FromSeconds(2)) };
        var neverAdded = DateTime.UtcNow;
        await AddAsync(never);
        var failed = await StatusAsync("never", State.Unhealthy);
        Assert.True(DateTime.UtcNow - neverAdded >= TimeSpan.FromSeconds(2), $"unhealthy {(DateTime.UtcNow - neverAdded).TotalMilliseconds:0} ms after it was added");
        Assert.Contains("no heartbeat file", failed.Detail);
    }

    [Fact]
    public async Task A_log_that_stops_growing_turns_idle_and_growing_again_healthy()
    {
        var path = Path.Combine(DataDirectory, "agent.log");
        await File.WriteAllTextAsync(path, "starting\n");
        var target = NewTarget("log");
        target.IdleAfter = Duration.FromTimeSpan(TimeSpan.FromSeconds(1));
        target.OutputActivity = new OutputActivityProbe { Path = path };
        await AddAsync(target);

        using var writing = new CancellationTokenSource();
        var writer = Task.Run(async () =>
        {
            while (!writing.IsCancellationRequested)
            {
                await File.AppendAllTextAsync(path, "working\n");
                await Task.Delay(100);
            }
        });
        await StatusAsync("log", State.Healthy);
        // Longer than idle_after (1 s) of probes every 100 ms: healthy throughout, since the log grows.
        Assert.All(await ProbedAsync("log", 15), status => Assert.Equal(State.Healthy, status.State));
        await writing.CancelAsync();
        await writer;
        var idle = await StatusAsync("log", State.Idle);
        Assert.Contains("no activity", idle.Detail);
        await File.AppendAllTextAsync(path, "back to work\n");
        var back = await StatusAsync("log", State.Healthy);
        Assert.True(back.LastActivityTime.ToDateTimeOffset() > idle.LastActivityTime.ToDateTimeOffset());
    }

    [Fact]
    public async Task Patterns_on_the_last_lines_give_unhealthy_and_idle_with_the_line()
    {
        var path = Path.Combine(DataDirectory, "agent.log");
        await File.WriteAllTextAsync(path, "working on task 1\n");
        var target = NewTarget("patterns");
        target.OutputActivity = new OutputActivityProbe
        {
            Path = path,
            UnhealthyPatterns = { "^Traceback", "FATAL" },
            IdlePatterns = { "rate limit(ed)?" },
        };
        await AddAsync(target);
        await StatusAsync("patterns", State.Healthy);
        await File.AppendAllTextAsync(path, "API says: rate limited, retrying in 60s\n");
        Assert.Equal("idle pattern matched: API says: rate limited, retrying in 60s", (await StatusAsync("patterns", State.Idle)).Detail);
        await File.AppendAllTextAsync(path, "Traceback (most recent call last):\n  File \"agent.py\", line 3\n");
        var broken = await StatusAsync("patterns", State.Unhealthy);
        Assert.Contains("Traceback (most recent call last):", broken.Detail);
        Assert.Contains("/^Traceback/", broken.Detail);
    }
}

public sealed class NetworkProbeTests : MonitorTestBase
{
    [Fact]
    public async Task A_grpc_health_server_switching_to_not_serving_is_unhealthy()
    {
        var health = new HealthServiceImpl();
        health.SetStatus("", HealthCheckResponse.Types.ServingStatus.Serving);
        health.SetStatus("agent", HealthCheckResponse.Types.ServingStatus.Serving);
        // A plain gRPC server with nothing but grpc.health.v1, as an agent would have.
        await using var server = await AgentServer.StartAsync(app => app.MapGrpcService<HealthServiceImpl>(),
            services => services.AddGrpc().Services.AddSingleton(health), http2Only: true);
        var address = server.Address;

        var target = NewTarget("grpc");
        target.GrpcHealth = new GrpcHealthProbe { Address = address, Service = "agent" };
        await AddAsync(target);
        await StatusAsync("grpc", State.Healthy);
        health.SetStatus("agent", HealthCheckResponse.Types.ServingStatus.NotServing);
        Assert.Contains("NotServing", (await StatusAsync("grpc", State.Unhealthy)).Detail);
        health.SetStatus("agent", HealthCheckResponse.Types.ServingStatus.Serving);
        await StatusAsync("grpc", State.Healthy);

        var unknownService = NewTarget("grpc-unknown-service");
        unknownService.GrpcHealth = new GrpcHealthProbe { Address = new Uri(address).Authority, Service = "nosuch" };
        await AddAsync(unknownService);
        Assert.Contains("does not know service 'nosuch'", (await StatusAsync("grpc-unknown-service", State.Unhealthy)).Detail);

        await server.StopAsync();
        Assert.Contains("Unavailable", (await StatusAsync("grpc", State.Unhealthy)).Detail);
    }

    [Fact]
    public async Task An_http_server_returning_500_is_unhealthy()
    {
        var status = 200;
        await using var app = await AgentServer.StartAsync(a => a.MapGet("/healthz", (HttpContext c) => Results.StatusCode(status)));
        var url = app.Address + "/healthz";

        var target = NewTarget("http");
        target.Http = new HttpProbe { Url = url };
        await AddAsync(target);
        Assert.Equal("HTTP 200", (await StatusAsync("http", State.Healthy)).Detail);
        status = 500;
        Assert.Contains("HTTP 500", (await StatusAsync("http", State.Unhealthy)).Detail);
        status = 302;
        await StatusAsync("http", State.Healthy);
        await app.StopAsync();
    }

    [Fact]
    public async Task Tcp_connects_to_a_listener_and_fails_on_a_port_nobody_listens_on()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var live = NewTarget("tcp-live");
        live.Tcp = new TcpProbe { Address = $"127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}" };
        await AddAsync(live);
        await StatusAsync("tcp-live", State.Healthy);

        var closed = NewTarget("tcp-closed");
        closed.Tcp = new TcpProbe { Address = $"127.0.0.1:{ServiceProcess.FreePort()}" };
        await AddAsync(closed);
        Assert.Contains("refused", (await StatusAsync("tcp-closed", State.Unhealthy)).Detail, StringComparison.OrdinalIgnoreCase);
    }
}

public sealed class ConcurrencyTests : MonitorTestBase
{
    [Fact]
    public async Task A_probe_that_hangs_past_its_timeout_does_not_hold_up_500_others()
    {
        // A server that accepts connections and never says a word: a gRPC health check against it hangs.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var accepted = new List<Socket>();
        _ = Task.Run(async () =>
        {
            try
            {
                while (true) accepted.Add(await silent.AcceptSocketAsync());
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
        });
        var hung = NewTarget("hung", interval: TimeSpan.FromSeconds(30));
        hung.Timeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(8));
        hung.GrpcHealth = new GrpcHealthProbe { Address = $"127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}" };
        await AddAsync(hung);

        var sleeper = Spawn("sleep", "300");
        var started = DateTime.UtcNow;
        for (var i = 0; i < 500; i++)
        {
            var target = NewTarget($"p{i:000}", interval: TimeSpan.FromSeconds(30));
            target.Process = new ProcessProbe { Pid = sleeper.Pid };
            await AddAsync(target);
        }
        // All 500 are probed, and healthy, long before the hung probe's timeout.
        await Eventually.ValueAsync(async () => (await Client.ListStatusesAsync(new ListStatusesRequest { State = State.Healthy, PageSize = 1000 })).Statuses.Count,
            n => n == 500, TimeSpan.FromSeconds(6), "500 healthy targets");
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(7));
        var still = await Client.GetStatusAsync(new GetStatusRequest { TargetId = "hung" });
        Assert.Equal(State.Unknown, still.State);
        Assert.Equal("not probed yet", still.Detail);

        var timedOut = await Eventually.ValueAsync(() => Client.GetStatusAsync(new GetStatusRequest { TargetId = "hung" }).ResponseAsync,
            s => s.LastProbeTime is not null, Timeout, "the hung probe to time out");
        Assert.Equal(State.Unhealthy, timedOut.State);
        Assert.Contains("no answer within", timedOut.Detail);
        Assert.InRange(timedOut.LastProbeDuration.ToTimeSpan(), TimeSpan.FromSeconds(7.5), TimeSpan.FromSeconds(10));
        foreach (var socket in accepted.ToList()) socket.Dispose();
    }
}
