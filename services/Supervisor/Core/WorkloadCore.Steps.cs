using System.Collections.Immutable;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Platform.Launcher.V1;
using Platform.Supervisor.V1;
using Phase = Platform.Supervisor.V1.WorkloadStatus.Types.Phase;

namespace Platform.Supervisor.Core;

public static partial class WorkloadCore
{
    private sealed partial class Turn
    {
        private void Run(Step step)
        {
            switch (step)
            {
                case Step.Start s: RunStart(s); break;
                case Step.Stop s: RunStop(s); break;
                case Step.CheckSuccessor s: Await(s, new Call.GetInstance(s.Stopped.SuccessorId, Status.Node)); break;
                case Step.EnsureTargets: EnsureTargets(); break;
                case Step.AddTargets s: Await(s, new Call.AddTarget(s.Remaining[0])); break;
                case Step.RemoveTargets s: Await(s, new Call.RemoveTargetsAndWait(Name, s.Generation)); break;
                case Step.Arm: RunArm(); break;
                case Step.ArmIfDue:
                    if (_armAt != default && _now >= _armAt) Push(new Step.Arm());
                    break;
                case Step.Resync:
                    if (!_reconcileAgain || !_reconciled) break;
                    _reconcileAgain = false;
                    Await(step, new Call.ListInstances(Name));
                    break;
                case Step.StopStray s: Await(s, new Call.StopInstance(s.InstanceId, null, s.Node)); break;
                case Step.ReconcileCurrent s: RunReconcileCurrent(s); break;
                case Step.ReconcileEnd s: ReconcileEnd(s.Running); break;
                case Step.StartIfDue: StartIfDue(); break;
                case Step.RefreshStable: RefreshStable(); break;
                case Step.ApplyAfterStop s: ApplyAfterStop(s.Change); break;
                case Step.ApplyAfterStart s: ApplyAfterStart(s.Change); break;
                case Step.FirstStartAfter: FirstStartAfter(); break;
                case Step.ManualAfterStop s: ManualAfterStop(s.Why); break;
                case Step.UnhealthyAfterStop s: UnhealthyAfterStop(s.Reason, s.Detail); break;
                case Step.DeleteAfterStop: DeleteAfterStop(); break;
                case Step.SuccessorAfterStop s: SuccessorAfterStop(s); break;
                case Step.Outcome s: _lastStop = s.Result; break;
                case Step.Reply: Reply(); break;
                case Step.Fail s: Fail(s.Error); break;
                default: throw new ArgumentOutOfRangeException(nameof(step), step, "unknown step");
            }
        }

        private void Resume(Step step, CoreEvent.CallResult r)
        {
            switch (step)
            {
                case Step.Start s: Started(s, r); break;
                case Step.Stop s: StopAnswered(s, r); break;
                case Step.CheckSuccessor s:
                    if (r.Instance is { State: Instance.Types.State.Running } successor && IsSuccessor(successor, Status.Generation))
                    {
                        Push(new Step.Outcome(StopOutcome.Replaced)); // after whatever taking the successor does
                        HandleExit(s.Stopped, "exited", successor);
                    }
                    else StoppedPath(s.Stopped, s.Reason, takeSuccessor: true); // stopped like any successor that raced a stop
                    break;
                case Step.AddTargets s:
                    if (r.Error is null)
                    {
                        if (s.Remaining.Count > 1) Push(new Step.AddTargets(s.Remaining.RemoveAt(0)));
                        else
                        {
                            _targetsAdded = true;
                            if (Status.Phase == Phase.Running && Status.Message.StartsWith(TargetsRefusedForNow, StringComparison.Ordinal))
                                Save(Phase.Running, $"running generation {Status.Generation} (pid {Status.Pid}); the monitor probes it now");
                            _targetsRetryAt = default;
                        }
                    }
                    else if (r.Error.Code == Grpc.Core.StatusCode.FailedPrecondition)
                    {
                        // Refused for now (a tmux server the workload starts itself is not up yet): added again shortly.
                        _targetsRetryAt = _now + _options.TargetRetryInterval;
                        var message = $"{TargetsRefusedForNow}: {r.Error.Detail} (tried again every {_options.TargetRetryInterval.TotalSeconds:0.###} s)";
                        if (Status.Message != message) Save(Status.Phase, message);
                    }
                    else if (!r.Error.Unreachable)
                    {
                        _targetsAdded = true; // the monitor refused the probe spec: said so, not retried at every resync
                        Save(Status.Phase, $"running, but the monitor refused the health probe: {r.Error.Detail}");
                    }
                    // Unreachable: health verdicts are missing until the monitor is back (added again at the next tick).
                    break;
                case Step.RemoveTargets: break; // not there, or the monitor is down (it then forgets them anyway)
                case Step.Arming s: Armed(s, r); break;
                case Step.Resync:
                    if (r.Error is not null) _reconcileAgain = true;
                    else BeginReconcile([.. r.Instances!.Where(i => i.Labels.GetValueOrDefault(WorkloadLabels.Workload) == Name)]);
                    break;
                case Step.StopStray:
                    if (r.Error is not null) _reconcileAgain = true; // it may still run: again later
                    break;
                case Step.ReconcileCurrent s: CurrentLooked(s.Running, r); break;
                case Step.ReconcileSuccessor s: SuccessorLooked(s, r); break;
                default: throw new InvalidOperationException($"{step.GetType().Name} made no call");
            }
        }

        private const string TargetsRefusedForNow = "running; the monitor cannot probe it yet";

        // ------------------------------------------------------------------ starting

        /// <summary>Starts generation N+1 (or retries a pending N). <see cref="WorkloadState.LastRefusal"/> says
        /// afterwards whether the Launcher refused the launch spec itself.</summary>
        private void RunStart(Step.Start s)
        {
            _lastRefusal = null;
            if (HasInstance) return; // never two: an instance is current
            if (!_launchPending)
            {
                // Placed before the generation is stored: a pending launch is retried on the same node, never a second one.
                if (!_nodes.Static && !(Status.Node.Length > 0 && _nodes.Fits(_w.Placement, Status.Node)))
                {
                    if (_nodes.Place(Name, _w.Placement, out var reason) is not { } node)
                    {
                        _retryAt = _now + _options.PlacementRetryInterval;
                        var message = $"cannot be placed: {reason}";
                        if (Status.Phase != Phase.Pending || Status.Message != message) Save(Phase.Pending, message);
                        return;
                    }
                    Status.Node = node;
                }
                Status.Generation++;
                _launchPending = true;
                Save(Phase.Pending, $"starting generation {Status.Generation} ({s.Reason})");
            }
            Await(s, new Call.Launch(Request(Status.Generation), Span(Status.Generation, s.Reason), Status.Node));
        }

        private void Started(Step.Start s, CoreEvent.CallResult r)
        {
            var generation = Status.Generation;
            if (r.Error is { Unreachable: true } unreachable)
            {
                _retryAt = _now + TimeSpan.FromSeconds(2);
                Save(Phase.Pending, $"the launcher is unreachable ({unreachable.Message}); generation {generation} starts when it is back");
                return;
            }
            if (r.Error is { } refused)
            {
                // The Launcher refused this launch spec: a failed start, with backoff like any failure.
                _launchPending = false;
                Status.LastExit = new ExitInfo { Time = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(_now), Reason = $"launch failed: {refused.Detail}" };
                _tracker.Started();
                _tracker.Exited(failed: true);
                History(generation, "launch-failed", refused.Detail);
                Save(FromTracker(), Describe($"launch failed: {refused.Detail}"));
                _lastRefusal = new Refusal(refused.Code, refused.Detail);
                return;
            }
            var instance = r.Instance!;
            _previousAttempt = r.TraceParent;
            _launchPending = false;
            Status.InstanceId = instance.Id;
            Status.Pid = instance.Pid;
            if (_nodes.Static) Status.Node = instance.Node; // where the one launcher says it runs
            _tracker.Started();
            History(generation, "started", $"{s.Reason}; instance {instance.Id}, pid {instance.Pid}{(Status.Node.Length > 0 ? $", node {Status.Node}" : "")}");
            Save(Phase.Running, $"running generation {generation} (pid {instance.Pid})");
            _targetsAdded = false;
            if (instance.State == Instance.Types.State.Exited) HandleExit(instance, "exited", null);
            else if (_options.ArmSuccessors && _options.ArmAfter > TimeSpan.Zero && _tracker.WouldRestartAtOnce(failed: true))
            {
                // Armed later (SupervisorOptions.ArmAfter), off the start path. An arm is the Launcher's for one
                // instance: the new one has none yet.
                _armed = null;
                _armAt = _now + _options.ArmAfter;
                Push(new Step.EnsureTargets());
            }
            else Push(new Step.EnsureTargets(), new Step.Arm());
        }

        // ------------------------------------------------------------------ stopping

        /// <summary>Stops the current instance's tree and waits for it (<see cref="WorkloadState.LastStop"/> says how it
        /// went). When the instance turns out to have exited by itself just before, with its armed successor already
        /// started: with TakeSuccessor (a restart was wanted anyway) that successor is the restart and stays; otherwise
        /// it is stopped too.</summary>
        private void RunStop(Step.Stop s)
        {
            if (!HasInstance)
            {
                _lastStop = StopOutcome.Stopped;
                return;
            }
            Await(s, new Call.StopInstance(Status.InstanceId, _w.StopGrace?.ToTimeSpan() ?? _options.DefaultStopGrace, Status.Node));
        }

        private void StopAnswered(Step.Stop s, CoreEvent.CallResult r)
        {
            if (r.Error is { Code: not StatusCode.NotFound } error)
            {
                Log(LogLevel.Warning, $"Workload {Name}: cannot stop instance {Status.InstanceId} ({s.Reason}): the launcher is unreachable ({error.Message})");
                _lastStop = StopOutcome.Unreachable;
                return;
            }
            var stopped = r.Error is null ? r.Instance : null;
            if (s.TakeSuccessor && stopped is { SuccessorId.Length: > 0 }) Push(new Step.CheckSuccessor(stopped, s.Reason));
            else StoppedPath(stopped, s.Reason, s.TakeSuccessor);
        }

        private void StoppedPath(Instance? stopped, string reason, bool takeSuccessor)
        {
            _armed = null; // the launcher starts no successor after a stop it was asked for
            RemoveTargetsInBackground(Status.Generation);
            Status.LastExit = Exit(stopped, reason);
            Status.InstanceId = "";
            Status.Pid = 0;
            History(Status.Generation, "stopped", reason);
            if (stopped is { SuccessorId.Length: > 0 })
            {
                // It exited by itself just before the stop and the launcher had already started its armed successor
                // (generation N+1): that one is stopped too, and its generation is used up.
                Status.Generation++;
                Status.InstanceId = stopped.SuccessorId;
                Push(new Step.Stop(reason + " (the successor the launcher started as the instance exited)", takeSuccessor));
            }
            else _lastStop = StopOutcome.Stopped;
        }

        // ------------------------------------------------------------------ exits and successors

        private void HandleExit(Instance instance, string reason, Instance? successor)
        {
            if (instance.Id != Status.InstanceId) return; // an instance already replaced or stopped on purpose
            var failed = !(instance.HasExitCode && instance.ExitCode == 0);
            var generation = Status.Generation;
            Status.LastExit = Exit(instance, reason);
            Status.InstanceId = "";
            Status.Pid = 0;
            RemoveTargetsInBackground(generation);
            _tracker.Exited(failed);
            History(generation, "exited", DescribeExit(Status.LastExit));
            if (successor is not null && IsSuccessor(successor, generation)) TakeSuccessor(successor);
            else Save(FromTracker(), Describe(DescribeExit(Status.LastExit)));
        }

        /// <summary>The Launcher started the armed successor the moment the instance exited: it is generation N+1, a
        /// restart like any other (counted, with its start span), unless the policy no longer wants an immediate restart
        /// (changed as the instance exited): then it is stopped and the policy has its way.</summary>
        private void TakeSuccessor(Instance successor)
        {
            var generation = Status.Generation + 1;
            var traceparent = _armed is { } armed && armed.Generation == generation ? armed.TraceParent : null;
            _armed = null;
            Status.Generation = generation;
            Status.InstanceId = successor.Id;
            Status.Pid = successor.Pid;
            if (!_tracker.IsDue)
                Push(new Step.Stop("started by the launcher, but the restart policy now says wait", TakeSuccessor: false),
                    new Step.SuccessorAfterStop(successor, Status.LastExit, traceparent));
            else SuccessorRuns(successor, traceparent);
        }

        private void SuccessorAfterStop(Step.SuccessorAfterStop s)
        {
            if (_lastStop == StopOutcome.Stopped)
            {
                Status.LastExit = s.Exit;
                Save(FromTracker(), Describe(DescribeExit(s.Exit!)));
            }
            else SuccessorRuns(s.Successor, s.TraceParent); // it cannot be stopped now (the launcher is out of reach): it runs
        }

        private void SuccessorRuns(Instance successor, string? traceparent)
        {
            if (traceparent is not null) _previousAttempt = traceparent;
            _tracker.Started();
            History(Status.Generation, "started", $"{RestartReason()}; restarted at once by the launcher (armed); instance {successor.Id}, pid {successor.Pid}");
            Save(Phase.Running, $"running generation {Status.Generation} (pid {successor.Pid})");
            _targetsAdded = false;
            Push(new Step.EnsureTargets(), new Step.Arm());
        }

        // ------------------------------------------------------------------ the armed successor

        /// <summary>
        /// Arms the Launcher to start generation N+1 by itself the moment instance N fails (or exits, under ALWAYS), when
        /// the restart policy would restart it at once anyway (zero backoff, below the limit): a crash is then followed
        /// by a new instance without a round trip through the supervisor. Disarms when the policy no longer says so. A
        /// failure to arm changes nothing: the exit then takes the ordinary path through the supervisor.
        /// </summary>
        private void RunArm()
        {
            _armAt = default; // whatever was scheduled: this arming decides
            if (!_reconciled || _deleted || !HasInstance) return;
            var onFailure = _options.ArmSuccessors && _tracker.WouldRestartAtOnce(failed: true);
            if (!onFailure && _armed is null) return;
            var request = new ArmSuccessorRequest { InstanceId = Status.InstanceId };
            StartSpan? span = null;
            if (onFailure)
            {
                request.Successor = Request(Status.Generation + 1);
                request.OnFailureOnly = !_tracker.WouldRestartAtOnce(failed: false);
                span = Span(Status.Generation + 1, "exited");
            }
            Await(new Step.Arming(onFailure ? Status.Generation + 1 : 0), new Call.ArmSuccessor(request, span, Status.Node));
        }

        private void Armed(Step.Arming s, CoreEvent.CallResult r)
        {
            if (r.Error is null)
            {
                _armed = s.Generation > 0 ? new ArmedSuccessor(s.Generation, r.TraceParent) : null;
                return;
            }
            var refused = r.Error.Code is StatusCode.FailedPrecondition or StatusCode.Unimplemented;
            // The call may have landed unless the launcher said it did not: disarmed explicitly if the policy changes.
            if (_armed is null && !refused) _armed = new ArmedSuccessor(null, null);
            // Any other answer is tried again: ArmAfter later, or ArmRetryUnreachable later when the call did not get an
            // answer of the launcher's own (a deadline, UNAVAILABLE, an open breaker, and INTERNAL or UNKNOWN, which a
            // launcher failing to spawn the held process under load answers too). Re-arming replaces an arm that
            // landed. Before, an arm that met INTERNAL or a deadline was never tried again, and the generation ran
            // unarmed until the next reconcile (ImmediateRestartTests failed on it in CI).
            if (!refused && s.Generation > 0 && _options.ArmAfter > TimeSpan.Zero)
                _armAt = _now + (r.Error.Unreachable ? _options.ArmRetryUnreachable : _options.ArmAfter);
            // Not tried again: an older launcher (UNIMPLEMENTED) or an instance that exited meanwhile (its EXITED is on
            // its way).
            Log(LogLevel.Debug, $"Workload {Name}: no successor armed for instance {Status.InstanceId}: {r.Error.Message}");
        }

        // ------------------------------------------------------------------ reconciling

        /// <summary>The Launcher's running instances of this workload (level-triggered: the state is corrected from what
        /// the Launcher has, whatever events were missed): strays stopped, the current instance adopted or its end
        /// learnt, the armed successor as the Launcher holds it.</summary>
        private void BeginReconcile(ImmutableList<Instance> running)
        {
            // What the launcher holds for the current instance: an arm it lost (its restart) or one we did not know of (ours).
            if (running.FirstOrDefault(i => i.Id == Status.InstanceId) is { } listed)
            {
                if (!listed.SuccessorArmed) _armed = null;
                else _armed ??= new ArmedSuccessor(null, null);
            }
            var steps = new List<Step>();
            // Strays: running instances of this workload from another generation (a start that was never recorded).
            foreach (var stray in running)
            {
                if (stray.Id == Status.InstanceId) continue;
                // Its armed successor: taken below, or by the EXITED that follows it (listed while the exit was being recorded).
                if (HasInstance && IsSuccessor(stray, Status.Generation)) continue;
                if (_launchPending && !HasInstance && GenerationOf(stray.Labels) == Status.Generation) continue; // adopted below
                Log(LogLevel.Warning, $"Workload {Name}: stopping stray instance {stray.Id} (generation {stray.Labels.GetValueOrDefault(WorkloadLabels.Generation)})");
                steps.Add(new Step.StopStray(stray.Id, stray.Node));
            }
            steps.Add(new Step.ReconcileCurrent(running));
            Push([.. steps]);
        }

        private void RunReconcileCurrent(Step.ReconcileCurrent s)
        {
            var running = s.Running;
            if (HasInstance && running.All(i => i.Id != Status.InstanceId))
            {
                Await(s, new Call.GetInstance(Status.InstanceId, Status.Node)); // it ended while nobody was listening: learn how
                return;
            }
            if (_launchPending && running.FirstOrDefault(i => GenerationOf(i.Labels) == Status.Generation) is { } launched)
            {
                // The launch of generation N happened but was not recorded before the supervisor stopped: adopt it.
                _launchPending = false;
                Status.InstanceId = launched.Id;
                Status.Pid = launched.Pid;
                _tracker.Started();
                History(Status.Generation, "adopted", $"instance {launched.Id}");
                Save(Phase.Running, $"running generation {Status.Generation} (pid {launched.Pid}, adopted)");
            }
            else if (HasInstance && !_reconciled)
            {
                History(Status.Generation, "adopted", $"instance {Status.InstanceId}");
                Save(Status.Phase, Status.Message);
            }
            Push(new Step.ReconcileEnd(running));
        }

        private void CurrentLooked(ImmutableList<Instance> running, CoreEvent.CallResult r)
        {
            if (r.Error is { Code: not StatusCode.NotFound })
            {
                _reconcileAgain = true;
                _reconciled = true; // starts stay impossible while an instance is current
                return;
            }
            var ended = r.Error is null ? r.Instance : null;
            if (ended is { State: Instance.Types.State.Exited, SuccessorId.Length: > 0 } && running.All(i => i.Id != ended.SuccessorId))
            {
                // Its armed successor started and has ended too: its generation is used up, so it is taken and its end learnt.
                Await(new Step.ReconcileSuccessor(ended, running), new Call.GetInstance(ended.SuccessorId, Status.Node));
                return;
            }
            Push(new Step.ReconcileEnd(running)); // after whatever the exit leads to
            if (ended is null || ended.State == Instance.Types.State.Exited)
            {
                var successor = running.FirstOrDefault(i => IsSuccessor(i, Status.Generation));
                HandleExit(ended ?? new Instance { Id = Status.InstanceId, State = Instance.Types.State.Exited },
                    ended is null ? "gone (the launcher has no record)" : "exited", successor);
            }
        }

        private void SuccessorLooked(Step.ReconcileSuccessor s, CoreEvent.CallResult r)
        {
            if (r.Error is { Code: not StatusCode.NotFound })
            {
                _reconcileAgain = true;
                _reconciled = true; // starts stay impossible while an instance is current
                return;
            }
            var successor = r.Error is null && IsSuccessor(r.Instance!, Status.Generation) ? r.Instance : null;
            // After whatever taking it leads to, the current instance (the successor) is looked at again.
            Push(successor is null ? new Step.ReconcileEnd(s.Running) : new Step.ReconcileCurrent(s.Running));
            HandleExit(s.Ended, "exited", successor);
        }

        private void ReconcileEnd(ImmutableList<Instance> running)
        {
            _reconciled = true;
            // A restarted launcher has forgotten its arms, a restarted supervisor its own: armed again unless in place.
            if (running.FirstOrDefault(i => i.Id == Status.InstanceId) is not { SuccessorArmed: true } || _armed?.Generation != Status.Generation + 1)
                Push(new Step.Arm());
        }
    }
}
