using Google.Protobuf.WellKnownTypes;
using Platform.Restarts;
using Platform.ServiceDefaults;
using Platform.Supervisor.V1;
using Mode = Platform.Supervisor.V1.RestartPolicy.Types.Mode;

namespace Platform.Supervisor;

/// <summary>Checks a workload field by field and turns its policy into the restart library's.</summary>
public static partial class WorkloadValidation
{
    public static readonly TimeSpan DefaultHeartbeatTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan MaxDuration = TimeSpan.FromDays(7);

    public static void Validate(Workload? workload, Violations v)
    {
        if (workload is null)
        {
            v.Add("workload", "is required");
            return;
        }
        WorkloadName.Check(v, "workload.name", workload.Name);
        if (workload.Launch is null) v.Add("workload.launch", "is required: a template name or a process spec");
        else
        {
            switch (workload.Launch.SourceCase)
            {
                case Launcher.V1.LaunchSpec.SourceOneofCase.Template when workload.Launch.Template.Length == 0:
                    v.Add("workload.launch.template", "must not be empty");
                    break;
                case Launcher.V1.LaunchSpec.SourceOneofCase.Process when workload.Launch.Process.Executable.Length == 0:
                    v.Add("workload.launch.process.executable", "is required");
                    break;
                case Launcher.V1.LaunchSpec.SourceOneofCase.None:
                    v.Add("workload.launch", "give a template name or a process spec");
                    break;
            }
        }
        var p = workload.RestartPolicy;
        if (p is not null)
        {
            if (!System.Enum.IsDefined(p.Mode)) v.Add("workload.restart_policy.mode", $"{(int)p.Mode} is not a restart mode");
            var initial = NonNegative(p.InitialBackoff, "workload.restart_policy.initial_backoff", v);
            var max = NonNegative(p.MaxBackoff, "workload.restart_policy.max_backoff", v);
            if (p.MaxBackoff is not null && max == TimeSpan.Zero) v.Add("workload.restart_policy.max_backoff", "must be positive");
            if (initial is { } i && max is { } m && m < i)
                v.Add("workload.restart_policy.max_backoff", $"must not be shorter than initial_backoff ({m.TotalSeconds:0.###}s < {i.TotalSeconds:0.###}s)");
            if (p.MaxBackoff is null && initial > TimeSpan.FromSeconds(60))
                v.Add("workload.restart_policy.max_backoff", $"must not be shorter than initial_backoff (default 60s < {initial.Value.TotalSeconds:0.###}s)");
            if (p.Multiplier != 0 && (p.Multiplier < 1 || p.Multiplier > 100 || double.IsNaN(p.Multiplier))) v.Add("workload.restart_policy.multiplier", "must be between 1 and 100 (0: the default, 2)");
            if (p.MaxRestarts < 0) v.Add("workload.restart_policy.max_restarts", "must not be negative (0: the default, 5)");
            Positive(p.RestartWindow, "workload.restart_policy.restart_window", v);
            Positive(p.Cooloff, "workload.restart_policy.cooloff", v);
            Positive(p.StableAfter, "workload.restart_policy.stable_after", v);
            if (p.Jitter < 0 || p.Jitter > 1 || double.IsNaN(p.Jitter)) v.Add("workload.restart_policy.jitter", "must be between 0 and 1");
        }
        if (workload.Placement is { } placement)
        {
            if (LabelSelector.TryParse(placement.NodeSelector, out var error) is null) v.Add("workload.placement.node_selector", error!);
            if (placement.NodeName.Length > 253 || placement.NodeName.Any(char.IsWhiteSpace))
                v.Add("workload.placement.node_name", "must be a node name (at most 253 characters, no spaces)");
        }
        if (workload.Health is { } h)
        {
            NonNegative(h.HeartbeatTimeout, "workload.health.heartbeat_timeout", v);
            if (h.HeartbeatFile.Length > 0 && !Path.IsPathFullyQualified(h.HeartbeatFile)) v.Add("workload.health.heartbeat_file", $"'{h.HeartbeatFile}' is not an absolute path");
            if (h.Probe is { } probe && probe.ProbeCase == Monitor.V1.Target.ProbeOneofCase.None)
                v.Add("workload.health.probe", "names no probe kind (process, grpc_health, http, tcp, output_activity, tmux_pane, ...)");
        }
        NonNegative(workload.StopGrace, "workload.stop_grace", v);
        if (workload.Labels.Count > 64) v.Add("workload.labels", "at most 64 labels");
    }

    private static TimeSpan? NonNegative(Duration? d, string field, Violations v)
    {
        if (d is null) return null;
        if (d.Seconds < 0 || d.Nanos < 0)
        {
            v.Add(field, "must not be negative");
            return null;
        }
        if (!Durations.IsValid(d))
        {
            v.Add(field, Durations.NotADuration);
            return null;
        }
        var span = d.ToTimeSpan();
        if (span > MaxDuration) v.Add(field, $"must be at most {MaxDuration.TotalDays:0} days");
        return span;
    }

    private static void Positive(Duration? d, string field, Violations v)
    {
        if (d is null) return;
        if (d.Seconds < 0 || d.Nanos < 0 || (d.Seconds == 0 && d.Nanos == 0)) v.Add(field, "must be positive");
        else if (!Durations.IsValid(d)) v.Add(field, Durations.NotADuration);
        else if (d.ToTimeSpan() > MaxDuration) v.Add(field, $"must be at most {MaxDuration.TotalDays:0} days");
    }

    /// <summary>The policy with every default filled in (Tmux-Orchestrator's numbers).</summary>
    public static Restarts.RestartPolicy ToPolicy(V1.RestartPolicy? p)
    {
        var defaults = new Restarts.RestartPolicy();
        if (p is null) return defaults;
        return new Restarts.RestartPolicy
        {
            Mode = p.Mode switch { Mode.OnFailure => RestartMode.OnFailure, Mode.Never => RestartMode.Never, _ => RestartMode.Always },
            InitialBackoff = p.InitialBackoff?.ToTimeSpan() ?? defaults.InitialBackoff,
            Multiplier = p.Multiplier == 0 ? defaults.Multiplier : p.Multiplier,
            MaxBackoff = p.MaxBackoff?.ToTimeSpan() ?? defaults.MaxBackoff,
            MaxRestarts = p.MaxRestarts == 0 ? defaults.MaxRestarts : p.MaxRestarts,
            RestartWindow = p.RestartWindow?.ToTimeSpan() ?? defaults.RestartWindow,
            Cooloff = p.Cooloff?.ToTimeSpan() ?? defaults.Cooloff,
            StableAfter = p.StableAfter?.ToTimeSpan() ?? defaults.StableAfter,
            Jitter = p.Jitter,
        };
    }

    /// <summary>The caller's policy as shown back: defaults filled in.</summary>
    public static V1.RestartPolicy Describe(Restarts.RestartPolicy p) => new()
    {
        Mode = p.Mode switch { RestartMode.OnFailure => Mode.OnFailure, RestartMode.Never => Mode.Never, _ => Mode.Always },
        InitialBackoff = Duration.FromTimeSpan(p.InitialBackoff),
        Multiplier = p.Multiplier,
        MaxBackoff = Duration.FromTimeSpan(p.MaxBackoff),
        MaxRestarts = p.MaxRestarts,
        RestartWindow = Duration.FromTimeSpan(p.RestartWindow),
        Cooloff = Duration.FromTimeSpan(p.Cooloff),
        StableAfter = Duration.FromTimeSpan(p.StableAfter),
        Jitter = p.Jitter,
    };
}
