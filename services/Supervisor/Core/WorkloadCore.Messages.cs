using Google.Protobuf.WellKnownTypes;
using Platform.Restarts;
using Platform.ServiceDefaults;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Core;

public static partial class WorkloadCore
{
    private sealed partial class Turn
    {
        /// <summary>A message from outside, turned into the steps that handle it.</summary>
        private void Begin(CoreEvent e)
        {
            switch (e)
            {
                case CoreEvent.FirstStart:
                    // A launch the Launcher refuses (unknown template, bad executable) is the caller's mistake: answered.
                    Push(new Step.Start("created"), new Step.FirstStartAfter(), new Step.Reply());
                    break;
                case CoreEvent.Applied applied:
                    Apply(applied.Spec);
                    break;
                case CoreEvent.RestartRequested r:
                    RestartByHand(r.GenerationSeen, r.Reason, r.RequestedAt);
                    break;
                case CoreEvent.DeleteRequested:
                    // A launch that may have happened without an answer: asked again under the same request id (the
                    // Launcher answers with that instance, or starts it), so it is stopped rather than left unsupervised.
                    if (_launchPending) Push(new Step.Start("deleting"));
                    _todo.AddRange([new Step.Stop("deleted", TakeSuccessor: false), new Step.DeleteAfterStop(), new Step.Reply()]);
                    break;
                case CoreEvent.Exited exited:
                    HandleExit(exited.Instance, "exited", exited.Successor);
                    break;
                case CoreEvent.Unhealthy u:
                    if (u.Generation != Status.Generation || !HasInstance) return; // about an older instance
                    var reason = u.Check == "heartbeat" ? "heartbeat-timeout" : "unhealthy";
                    Push(new Step.Stop($"{reason}: {u.Detail}", TakeSuccessor: true), new Step.UnhealthyAfterStop(reason, u.Detail));
                    break;
                case CoreEvent.Reconciled r:
                    // Another node's instances of this workload are all strays (a node back from a loss): stopped.
                    if (r.Node is { } node && !_nodes.Static && node != Status.Node)
                        Push([.. r.Running.Select(i => (Step)new Step.StopStray(i.Id, node))]);
                    else BeginReconcile([.. r.Running]);
                    break;
                case CoreEvent.NodeGone g:
                    NodeGone(g.Node);
                    break;
                case CoreEvent.MonitorReconnected:
                    _targetsAdded = false;
                    Push(new Step.EnsureTargets());
                    break;
                case CoreEvent.Flush:
                    Push(new Step.Reply());
                    break;
                case CoreEvent.Tick:
                    Push(new Step.Resync(), new Step.StartIfDue(), new Step.RefreshStable(), new Step.EnsureTargets(), new Step.ArmIfDue());
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(e), e, "not a message");
            }
        }

        private void Apply(Supervisor.V1.Workload spec)
        {
            var launchChanged = !spec.Launch.Equals(_w.Launch);
            var phase = Status.Phase;
            if (!launchChanged && Equals(spec.RestartPolicy, _w.RestartPolicy) && Equals(spec.Health, _w.Health) &&
                Equals(spec.StopGrace, _w.StopGrace) && spec.Labels.Equals(_w.Labels) && Equals(spec.Placement, _w.Placement))
            {
                // The same spec again (an apply repeated, as `platformctl apply` of an unchanged file): nothing stored,
                // the revision stays, the answer is the workload as it is.
                Push(new Step.Reply());
                return;
            }
            if (launchChanged && (phase is Phase.BackingOff or Phase.CoolingOff || _launchPending))
            {
                Fail(PlatformException.Conflict($"workload '{Name}' is {phase} (restarting); its launch spec cannot change now. Apply again once it runs, or restart it by hand"));
                return;
            }
            // A new launch spec takes effect by a restart: the old tree is stopped first; if it cannot be, nothing changes.
            // A new placement its node no longer fits moves it (stopped here, started where it fits).
            var moves = !_nodes.Static && HasInstance && !_nodes.Fits(spec.Placement, Status.Node);
            var change = new SpecChange(spec, (launchChanged || moves) && HasInstance, !Equals(spec.Health, _w.Health), _w.Launch, phase);
            if (change.Restart) Push(new Step.Stop("launch spec changed", TakeSuccessor: false));
            _todo.Add(new Step.ApplyAfterStop(change));
        }

        private void ApplyAfterStop(SpecChange c)
        {
            if (_lastStop == StopOutcome.Unreachable)
            {
                Fail(PlatformException.Unavailable($"the launcher is unreachable; workload '{Name}' keeps running its current launch spec"));
                return;
            }
            var spec = c.Spec;
            _w.Launch = spec.Launch;
            _w.RestartPolicy = spec.RestartPolicy;
            _w.Health = spec.Health;
            _w.StopGrace = spec.StopGrace;
            _w.Placement = spec.Placement;
            _w.Labels.Clear();
            _w.Labels.Add(spec.Labels);
            _w.UpdateTime = Timestamp.FromDateTimeOffset(_now);
            _tracker.Policy = WorkloadValidation.ToPolicy(spec.RestartPolicy);
            Save(c.PhaseBefore, "updated");
            if (c.Restart)
            {
                _tracker.RestartNow();
                Push(new Step.Start("launch spec changed"), new Step.ApplyAfterStart(c), new Step.Reply());
            }
            else if (c.HealthChanged && HasInstance)
            {
                // Removed before the new ones are added under the same ids (a late removal would drop the new ones).
                _targetsAdded = false;
                _targetsGeneration = 0;
                Push(new Step.RemoveTargets(Status.Generation), new Step.EnsureTargets(), new Step.Arm(), new Step.Reply());
            }
            else Push(new Step.Arm(), new Step.Reply()); // the policy or the labels may have changed: the armed successor follows
        }

        private void ApplyAfterStart(SpecChange c)
        {
            if (_lastRefusal is not { } refusal) return;
            // The Launcher refused the new spec (unknown template, missing executable): back to the previous one,
            // started again at once, and the caller hears why. The spec is as it was before the call.
            _w.Launch = c.PreviousLaunch;
            _tracker.RestartNow();
            Save(Phase.Pending, $"the new launch spec was refused ({refusal.Detail}); back to the previous one");
            _todo.Clear();
            Push(new Step.Start("previous launch spec restored"), new Step.Fail(PlatformException.Like(refusal.Code,
                $"the launcher refused the new launch spec: {refusal.Detail}; workload '{Name}' keeps its previous launch spec")));
        }

        /// <summary>A restart by hand; coalesced with any other trigger about the same generation.</summary>
        private void RestartByHand(long generationSeen, string reason, DateTimeOffset requestedAt)
        {
            Push(new Step.Reply());
            if (generationSeen != Status.Generation) return; // already restarted meanwhile
            if (Status.Phase == Phase.Pending) return; // a start is under way
            if (HasInstance && _tracker.State.StartedAt is { } started && Status.Generation > 1 && requestedAt - started < _options.ManualRestartCoalesce)
                return; // it restarted just before the request: that restart is the one asked for
            var why = reason.Length > 0 ? $"manual: {reason}" : "manual";
            Push(new Step.Stop(why, TakeSuccessor: true), new Step.ManualAfterStop(why));
        }

        private void ManualAfterStop(string why)
        {
            switch (_lastStop)
            {
                case StopOutcome.Unreachable:
                    Fail(PlatformException.Unavailable($"the launcher is unreachable; workload '{Name}' is left as it is"));
                    return;
                case StopOutcome.Replaced:
                    return; // it had just crashed: its successor is the fresh instance asked for
            }
            _tracker.RestartNow();
            Push(new Step.Start(why));
        }

        private void UnhealthyAfterStop(string reason, string detail)
        {
            switch (_lastStop)
            {
                case StopOutcome.Replaced:
                    return; // it had just exited, and its successor is the restart
                case StopOutcome.Unreachable:
                    Save(Status.Phase, $"{reason} ({detail}), but the launcher is unreachable: left alone until it is back");
                    return;
            }
            _tracker.Exited(failed: true);
            Save(FromTracker(), Describe($"{reason}: {detail}"));
        }

        private void DeleteAfterStop()
        {
            if (_lastStop == StopOutcome.Unreachable)
            {
                Fail(PlatformException.Unavailable($"the launcher is unreachable; workload '{Name}' is still running and was not deleted"));
                return;
            }
            if (_launchPending)
            {
                // The launch asked again before the stop was not answered: it may have started an instance nobody would stop.
                Fail(PlatformException.Unavailable($"the launcher is unreachable; generation {Status.Generation} of workload '{Name}' may have started, so it was not deleted"));
                return;
            }
            _tracker.Stop();
            _nodes.Assign(Name, "");
            Actions.Add(new WorkloadAction.DeleteRecord(Name));
            var previous = Status.Phase;
            Status.Phase = Phase.Stopped;
            Status.Message = "deleted";
            var revision = _snapshot.Revision;
            _snapshot = _w.Clone();
            _snapshot.Revision = revision; // the last stored one: a delete stores nothing
            Actions.Add(new WorkloadAction.Publish(_snapshot, previous, "deleted"));
            _deleted = true;
        }

        /// <summary>
        /// The workload's node is lost (its lease ran out): its instance there, or the launch that may have happened
        /// there, is written off, and the workload is placed again at once under a new generation (not counted as a
        /// failure: the node failed, not the workload). When the node comes back, what it still runs of this workload
        /// is a stray of an older generation and is stopped (fencing). A workload not running stays as it is, to be
        /// placed anew at its next start.
        /// </summary>
        private void NodeGone(string node)
        {
            if (_nodes.Static || node != Status.Node) return;
            _reconciled = true; // nothing to reconcile with there
            var generation = Status.Generation;
            Status.Node = "";
            _nodes.Assign(Name, "");
            if (HasInstance || _launchPending)
            {
                var what = HasInstance ? $"instance {Status.InstanceId}" : $"the start of generation {generation}";
                if (HasInstance) Status.LastExit = new Supervisor.V1.ExitInfo { Time = Timestamp.FromDateTimeOffset(_now), Reason = "node-lost" };
                RemoveTargetsInBackground(generation);
                Status.InstanceId = "";
                Status.Pid = 0;
                _launchPending = false;
                _armed = null;
                _armAt = default;
                History(generation, "lost", $"node {node} lost with {what}");
                if (_tracker.Phase is RestartPhase.Running or RestartPhase.Pending) _tracker.RestartNow();
                Save(Phase.Pending, $"node {node} was lost with {what}; placing it again");
                if (_tracker.IsDue) Push(new Step.Start($"node {node} lost"));
            }
            else Save(Status.Phase, Status.Message);
        }

        private void FirstStartAfter()
        {
            if (_lastRefusal is { } refusal)
                Fail(PlatformException.Like(refusal.Code, refusal.Detail));
        }

        private void Reply()
        {
            if (_caller != 0) Actions.Add(new WorkloadAction.Reply(_caller, _snapshot, null));
        }

        private void StartIfDue()
        {
            if (_reconciled && _tracker.IsDue && _now >= _retryAt)
                Push(new Step.Start(Status.Generation == 0 ? "created" : RestartReason()));
        }

        private void RefreshStable()
        {
            if (_tracker.Refresh()) Save(Phase.Running, "running stably; restart count reset");
        }
    }
}
