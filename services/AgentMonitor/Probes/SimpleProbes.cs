using System.Net.Sockets;
using Grpc.Core;
using Grpc.Health.V1;
using Platform.ProcessControl;
using Platform.Registry.V1;

namespace Platform.AgentMonitor.Probes;

/// <summary>Alive: the pid exists with the expected start time, is not a zombie and is not stopped.</summary>
internal sealed class ProcessProbe(ProbeContext context) : IProbe
{
    public Task<ProbeResult> RunAsync(CancellationToken cancellationToken)
    {
        var probe = context.Spec.Target.Process;
        var pid = (int)probe.Pid;
        var stat = ProcFs.ReadStat(pid);
        ProbeResult result;
        if (stat is not { } s) result = ProbeResult.Failed($"no process with pid {pid}");
        else if (probe.StartTimeTicks != 0 && s.StartTime != probe.StartTimeTicks)
            result = ProbeResult.Failed($"pid {pid} is another process now (start time {s.StartTime}, expected {probe.StartTimeTicks})");
        else if (s.IsZombie) result = ProbeResult.Failed($"pid {pid} has exited (zombie, not yet reaped)");
        else if (s.IsStopped) result = ProbeResult.Failed($"pid {pid} is stopped (state {s.State})");
        else result = ProbeResult.Alive($"pid {pid} is running (state {s.State})");
        return Task.FromResult(result);
    }

    public void Dispose() { }
}

/// <summary>Alive: the heartbeat file's mtime is younger than max_age; failed once no beat came within max_age of the
/// probe's start either.</summary>
internal sealed class HeartbeatFileProbe(ProbeContext context, TimeSpan maxAge) : IBlockingProbe
{
    /// <summary>When the probe began watching: a heartbeat is expected within max_age of it. An agent started just
    /// before its target was added has not beaten yet (or its file is a predecessor's): that is not a failure until
    /// it has had max_age to beat, as a Kubernetes liveness probe waits out its initial delay. Before, a missing or old
    /// file failed the first probe, and an agent slower to start than one probe interval (a .NET program on a busy
    /// machine) was restarted over and over without ever beating.</summary>
    private readonly DateTimeOffset _since = context.Time.GetUtcNow();

    public Task<ProbeResult> RunAsync(CancellationToken cancellationToken)
    {
        var path = context.Spec.Target.HeartbeatFile.Path;
        var now = context.Time.GetUtcNow();
        var waiting = now - _since;
        ProbeResult result;
        try
        {
            var file = new FileInfo(path);
            var age = file.Exists ? now - file.LastWriteTimeUtc : (TimeSpan?)null;
            var what = age is { } old ? $"heartbeat is {Format.Age(old)} old" : $"no heartbeat file at {path}";
            if (age is { } fresh && fresh <= maxAge)
                result = ProbeResult.Alive($"heartbeat {Format.Age(fresh)} ago") with { LastActivity = file.LastWriteTimeUtc };
            else if (waiting <= maxAge)
                result = ProbeResult.Unknown($"{what}; waiting up to {Format.Age(maxAge)} from the probe's start for a beat");
            else
                result = ProbeResult.Failed($"{what} (max {Format.Age(maxAge)})");
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            result = ProbeResult.Unknown($"cannot read {path}: {e.Message}");
        }
        return Task.FromResult(result);
    }

    public void Dispose() { }
}

/// <summary>Alive: the registry session is ACTIVE and was renewed within max_age (default: its ttl).</summary>
internal sealed class RegistryHeartbeatProbe(ProbeContext context, SessionRegistry.SessionRegistryClient registry) : IProbe
{
    public async Task<ProbeResult> RunAsync(CancellationToken cancellationToken)
    {
        var probe = context.Spec.Target.RegistryHeartbeat;
        Session session;
        try
        {
            session = await registry.GetSessionAsync(new GetSessionRequest { Id = probe.SessionId },
                deadline: DateTime.UtcNow + context.Spec.Timeout, cancellationToken: cancellationToken);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
        {
            return ProbeResult.Failed($"the registry has no session {probe.SessionId}");
        }
        catch (RpcException e)
        {
            return ProbeResult.Unknown($"the registry could not be asked: {e.Status.StatusCode} {e.Status.Detail}");
        }
        if (session.State != Session.Types.State.Active)
            return ProbeResult.Failed($"session {session.Id} is {session.State} ({session.EndReason})");
        var maxAge = probe.MaxAge?.ToTimeSpan() ?? session.Ttl?.ToTimeSpan() ?? TimeSpan.FromSeconds(30);
        var last = session.HeartbeatTime?.ToDateTimeOffset() ?? session.CreateTime.ToDateTimeOffset();
        var age = context.Time.GetUtcNow() - last;
        return age > maxAge
            ? ProbeResult.Failed($"last heartbeat {Format.Age(age)} ago (max {Format.Age(maxAge)})")
            : ProbeResult.Alive($"last heartbeat {Format.Age(age)} ago") with { LastActivity = last };
    }

    public void Dispose() { }
}

/// <summary>grpc.health.v1 Check: SERVING is alive, anything else (or no answer) a failure.</summary>
internal sealed class GrpcHealthProbe(ProbeContext context, ProbeClients clients) : IProbe
{
    public async Task<ProbeResult> RunAsync(CancellationToken cancellationToken)
    {
        var probe = context.Spec.Target.GrpcHealth;
        var client = new Health.HealthClient(clients.Channel(context.Spec.Endpoint!));
        try
        {
            var reply = await client.CheckAsync(new HealthCheckRequest { Service = probe.Service },
                deadline: DateTime.UtcNow + context.Spec.Timeout, cancellationToken: cancellationToken);
            return reply.Status == HealthCheckResponse.Types.ServingStatus.Serving
                ? ProbeResult.Alive("SERVING")
                : ProbeResult.Failed($"health status {reply.Status}");
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
        catch (RpcException e)
        {
            return ProbeResult.Failed(e.StatusCode switch
            {
                StatusCode.NotFound => $"the server does not know service '{probe.Service}'",
                StatusCode.Unimplemented => "the server has no grpc.health.v1 service",
                StatusCode.DeadlineExceeded => $"no answer within {Format.Age(context.Spec.Timeout)}",
                _ => $"{e.StatusCode}: {e.Status.Detail}",
            });
        }
    }

    public void Dispose() { }
}

/// <summary>HTTP GET: a 2xx or 3xx status is alive (redirects are not followed).</summary>
internal sealed class HttpProbe(ProbeContext context, ProbeClients clients) : IProbe
{
    public async Task<ProbeResult> RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, context.Spec.Endpoint);
            using var response = await clients.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            var code = (int)response.StatusCode;
            return code is >= 200 and < 400
                ? ProbeResult.Alive($"HTTP {code}")
                : ProbeResult.Failed($"HTTP {code} {response.ReasonPhrase}");
        }
        catch (HttpRequestException e)
        {
            return ProbeResult.Failed(e.InnerException?.Message ?? e.Message);
        }
    }

    public void Dispose() { }
}

/// <summary>TCP connect.</summary>
internal sealed class TcpProbe(ProbeContext context) : IProbe
{
    public async Task<ProbeResult> RunAsync(CancellationToken cancellationToken)
    {
        var endpoint = context.Spec.Endpoint!;
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(endpoint.IdnHost, endpoint.Port, cancellationToken);
            return ProbeResult.Alive($"connected to {endpoint.Authority}");
        }
        catch (SocketException e)
        {
            return ProbeResult.Failed($"cannot connect to {endpoint.Authority}: {e.Message}");
        }
    }

    public void Dispose() { }
}

internal static class Format
{
    public static string Age(TimeSpan age) =>
        age < TimeSpan.Zero ? "0s" :
        age.TotalSeconds < 10 ? $"{age.TotalSeconds:0.0}s" :
        age.TotalMinutes < 2 ? $"{age.TotalSeconds:0}s" :
        age.TotalHours < 2 ? $"{(int)age.TotalMinutes}m{age.Seconds}s" : $"{(int)age.TotalHours}h{age.Minutes}m";
}
