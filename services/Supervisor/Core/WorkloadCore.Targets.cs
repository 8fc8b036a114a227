using System.Collections.Immutable;
using System.Globalization;
using Google.Protobuf.WellKnownTypes;
using Platform.Monitor.V1;

namespace Platform.Supervisor.Core;

public static partial class WorkloadCore
{
    private sealed partial class Turn
    {
        /// <summary>Adds the current generation's targets to the Monitor unless it holds them.</summary>
        private void EnsureTargets()
        {
            if (_targetsRetryAt != default && _targetsRetryAt <= _now) _targetsRetryAt = default; // due: tried now (or moot)
            if (_targetsAdded || !HasInstance) return;
            if (_targetsRetryAt > _now && _targetsGeneration == Status.Generation) return; // refused for now: not yet
            var targets = Targets();
            if (targets.Count == 0)
            {
                _targetsAdded = true;
                return;
            }
            _targetsGeneration = Status.Generation;
            Push(new Step.AddTargets([.. targets]));
        }

        private List<Target> Targets()
        {
            var list = new List<Target>();
            var prefix = $"{WorkloadLabels.TargetPrefix}{Name}/{Status.Generation}";
            var health = _w.Health;
            if (health?.Probe is { } probe)
            {
                var target = probe.Clone();
                target.Id = prefix + "/health";
                target.Workload = Name;
                if (target.ProbeCase == Target.ProbeOneofCase.Process && target.Process.Pid == 0) target.Process.Pid = Status.Pid;
                list.Add(Own(target, "health"));
            }
            var timeout = health?.HeartbeatTimeout?.ToTimeSpan() ?? WorkloadValidation.DefaultHeartbeatTimeout;
            if (timeout > TimeSpan.Zero && health?.HeartbeatFile is { Length: > 0 } file)
            {
                var interval = TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 4, TimeSpan.FromMilliseconds(100).Ticks, TimeSpan.FromSeconds(10).Ticks));
                list.Add(Own(new Target
                {
                    Id = prefix + "/heartbeat",
                    Workload = Name,
                    Interval = Duration.FromTimeSpan(interval),
                    FailureThreshold = 1,
                    HeartbeatFile = new HeartbeatFileProbe { Path = file, MaxAge = Duration.FromTimeSpan(timeout) },
                }, "heartbeat"));
            }
            return list;
        }

        /// <summary>Labels a target as this workload's, of the current generation: its verdicts find their way back by them.</summary>
        private Target Own(Target target, string check)
        {
            target.Labels[WorkloadLabels.Workload] = Name;
            target.Labels[WorkloadLabels.Generation] = Status.Generation.ToString(CultureInfo.InvariantCulture);
            target.Labels[WorkloadLabels.Check] = check;
            return target;
        }

        /// <summary>Drops the Monitor's targets of a generation, in the background: nothing waits for it (a restart must
        /// not), and a verdict that still arrives about that generation is ignored anyway.</summary>
        private void RemoveTargetsInBackground(long generation)
        {
            _targetsAdded = false;
            if (_targetsGeneration != generation) return;
            _targetsGeneration = 0;
            Actions.Add(new WorkloadAction.RemoveTargets(Name, generation));
        }
    }
}
