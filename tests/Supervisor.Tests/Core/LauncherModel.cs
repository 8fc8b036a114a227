using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Platform.Launcher.V1;
using Platform.Supervisor.Core;

namespace Platform.Supervisor.Tests.Core;

/// <summary>
/// The Launcher as the Supervisor's core sees it, in memory: what its contract says (and what the real Launcher and its
/// tests show), not a mock of its code. It exists because the property test needs thousands of interleavings in which a
/// crash, a lost answer or a reconnect lands exactly between two steps, which real processes cannot be made to do on
/// cue. The contract: a repeated request id is answered with its first instance, as it is now; an armed successor starts
/// the moment its instance exits by itself (not after a stop asked for; with on_failure_only, not after exit code 0) and
/// its predecessor then names it; arming an exited instance is FAILED_PRECONDITION; every exit is published, stops too.
/// </summary>
internal sealed class LauncherModel
{
    /// <summary>The template name the model refuses, as the Launcher refuses an unknown template.</summary>
    public const string UnknownTemplate = "no-such-template";

    private sealed class Tracked(Instance instance)
    {
        public Instance Instance { get; set; } = instance;
        public ArmSuccessorRequest? Arm { get; set; }
    }

    private readonly Dictionary<string, Tracked> _instances = [];
    private readonly Dictionary<string, string> _requests = [];
    private readonly bool _ignoreRequestIds;
    private int _next;

    /// <param name="ignoreRequestIds">A planted defect: a Launcher that starts a process for every request, repeated or not.</param>
    public LauncherModel(bool ignoreRequestIds = false) => _ignoreRequestIds = ignoreRequestIds;

    /// <summary>Every EXITED event the Launcher published, in order.</summary>
    public List<CoreEvent.Exited> Published { get; } = [];

    /// <summary>The generation label of every process it started, in order.</summary>
    public List<long> StartedGenerations { get; } = [];

    public List<Instance> Running(string workload) =>
        [.. _instances.Values.Where(t => t.Instance.State == Instance.Types.State.Running && t.Instance.Workload == workload).Select(t => Get(t))];

    public Instance Launch(LaunchRequest request)
    {
        if (request.SourceCase == LaunchRequest.SourceOneofCase.Template && request.Template == UnknownTemplate)
            throw new RpcException(new Status(StatusCode.NotFound, $"template '{request.Template}' is not configured"));
        if (!_ignoreRequestIds && _requests.TryGetValue(request.RequestId, out var existing)) return Get(_instances[existing]);
        var id = $"instance-{++_next}";
        var instance = new Instance
        {
            Id = id,
            Workload = request.Workload,
            Pid = 1000 + _next,
            State = Instance.Types.State.Running,
            Labels = { request.Labels },
            StartTime = Timestamp.FromDateTimeOffset(DateTimeOffset.UnixEpoch),
        };
        _instances[id] = new Tracked(instance);
        _requests[request.RequestId] = id;
        StartedGenerations.Add(WorkloadCore.GenerationOf(request.Labels) ?? -1);
        return Get(_instances[id]);
    }

    public Instance Stop(string id)
    {
        var tracked = Find(id);
        if (tracked.Instance.State == Instance.Types.State.Running)
        {
            tracked.Arm = null; // a stop asked for is not an exit of its own: no successor
            End(tracked, exitCode: null, signal: 15, successor: null);
        }
        return Get(tracked);
    }

    public Instance GetInstance(string id) => Get(Find(id));

    public void ArmSuccessor(ArmSuccessorRequest request)
    {
        var tracked = Find(request.InstanceId);
        if (tracked.Instance.State != Instance.Types.State.Running)
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"instance '{request.InstanceId}' has exited; a successor can be armed only for a running instance"));
        tracked.Arm = request.Successor is null ? null : request.Clone();
    }

    /// <summary>The running instance of the workload exits by itself with <paramref name="exitCode"/>; an armed
    /// successor starts first, as in the Launcher.</summary>
    public void Crash(string workload, int exitCode)
    {
        var tracked = _instances.Values.FirstOrDefault(t => t.Instance.State == Instance.Types.State.Running && t.Instance.Workload == workload);
        if (tracked is null) return;
        var arm = tracked.Arm;
        tracked.Arm = null;
        var successor = arm is not null && (!arm.OnFailureOnly || exitCode != 0) ? Launch(arm.Successor) : null;
        End(tracked, exitCode, signal: null, successor);
    }

    /// <summary>A restart of the Launcher: its children live on (re-adopted), its arms are forgotten.</summary>
    public void Restart()
    {
        foreach (var tracked in _instances.Values) tracked.Arm = null;
    }

    private void End(Tracked tracked, int? exitCode, int? signal, Instance? successor)
    {
        var instance = tracked.Instance.Clone();
        instance.State = Instance.Types.State.Exited;
        instance.ExitTime = Timestamp.FromDateTimeOffset(DateTimeOffset.UnixEpoch);
        if (exitCode is { } code) instance.ExitCode = code;
        if (signal is { } s) instance.Signal = s;
        instance.SuccessorId = successor?.Id ?? "";
        tracked.Instance = instance;
        Published.Add(new CoreEvent.Exited(instance.Clone(), successor));
    }

    private Tracked Find(string id) =>
        _instances.TryGetValue(id, out var tracked) ? tracked : throw new RpcException(new Status(StatusCode.NotFound, $"instance '{id}' was not found"));

    private static Instance Get(Tracked tracked)
    {
        var instance = tracked.Instance.Clone();
        instance.SuccessorArmed = tracked.Arm is not null;
        return instance;
    }
}
