using Microsoft.Extensions.Options;
using Platform.Monitor.V1;
using Platform.Registry.V1;

namespace Platform.AgentMonitor.Probes;

/// <summary>Makes the probe of a target, with the shared clients and connections it needs.</summary>
public sealed class ProbeFactory(IOptions<MonitorOptions> options, ProbeClients clients, TmuxServers tmux, IServiceProvider services)
{
    public IProbe Create(TargetSpec spec, TimeProvider time, Action probeNow)
    {
        var context = new ProbeContext(spec, time, probeNow);
        var o = options.Value;
        return spec.Target.ProbeCase switch
        {
            Target.ProbeOneofCase.Process => new ProcessProbe(context),
            Target.ProbeOneofCase.HeartbeatFile => new HeartbeatFileProbe(context, spec.Target.HeartbeatFile.MaxAge?.ToTimeSpan() ?? o.DefaultHeartbeatMaxAge),
            Target.ProbeOneofCase.RegistryHeartbeat => new RegistryHeartbeatProbe(context, services.GetRequiredService<SessionRegistry.SessionRegistryClient>()),
            Target.ProbeOneofCase.GrpcHealth => new GrpcHealthProbe(context, clients),
            Target.ProbeOneofCase.Http => new HttpProbe(context, clients),
            Target.ProbeOneofCase.Tcp => new TcpProbe(context),
            Target.ProbeOneofCase.OutputActivity => new OutputActivityProbe(context, o.PatternLines),
            Target.ProbeOneofCase.TmuxPane => new TmuxPaneProbe(context, tmux, o.PatternLines),
            _ => throw new ArgumentException($"no probe of kind {spec.Target.ProbeCase}"),
        };
    }
}
