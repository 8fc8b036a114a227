using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Configuration;
using Platform.ServiceDefaults;
using Platform.Supervisor.V1;
using Polly;
using Polly.CircuitBreaker;

namespace Platform.Supervisor;

/// <summary>One launcher the Supervisor talks to: its client behind its own circuit breaker, and whether its event
/// stream is connected. A node of the registry (Supervisor:Nodes=registry) or the one launcher of the "launcher" service.</summary>
public sealed class NodeClient
{
    public NodeClient(string name, string address, IReadOnlyDictionary<string, string> labels, int capacity, Launcher.V1.Launcher.LauncherClient client, TimeProvider time, GrpcChannel? channel = null)
    {
        Name = name;
        Address = address;
        Labels = labels;
        Capacity = capacity;
        Client = client;
        Channel = channel;
        Pipeline = Dependencies.Breaker(BreakerState, time);
        Launches = new LaunchBatcher(this);
    }

    public string Name { get; }
    public string Address { get; }
    public IReadOnlyDictionary<string, string> Labels { get; }
    public int Capacity { get; }
    public Launcher.V1.Launcher.LauncherClient Client { get; }
    public GrpcChannel? Channel { get; }
    public CircuitBreakerStateProvider BreakerState { get; } = new();
    public ResiliencePipeline Pipeline { get; }

    /// <summary>This node's launches, sent in batches.</summary>
    public LaunchBatcher Launches { get; }

    /// <summary>Its instance events are followed and its instances reconciled: it may take new placements.</summary>
    public volatile bool Ready;
    public volatile bool EventsConnected;
}

/// <summary>
/// The launchers the Supervisor places workloads on, and which workload is on which node. Static (the default): one
/// launcher, the "launcher" service, every call goes to it whatever node a workload names. Registry
/// (Supervisor:Nodes=registry): the nodes the launchers announce in the registry, each with its own channel; a workload
/// is placed on the eligible node (alive, reconciled, matching its placement, below its capacity) with the fewest
/// workloads, ties by name. Placement is the one shared decision between workloads, so it is made here under a lock and
/// counted at once: a burst of applies spreads instead of all seeing the same counts.
/// </summary>
public sealed class NodeSet : Core.IPlacement
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, NodeClient> _nodes = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _assigned = new(StringComparer.Ordinal); // workload -> node
    private readonly NodeClient? _static;

    /// <summary>One launcher, known by its service name.</summary>
    public NodeSet(NodeClient single) => _static = single;

    /// <summary>Nodes from the registry, none known yet.</summary>
    public NodeSet() { }

    public bool Static => _static is not null;

    public IReadOnlyList<NodeClient> All
    {
        get
        {
            if (_static is not null) return [_static];
            lock (_lock) return [.. _nodes.Values];
        }
    }

    /// <summary>The client for calls about <paramref name="node"/>: the one launcher when static; null when the node is
    /// not (or no longer) known.</summary>
    public NodeClient? Get(string node)
    {
        if (_static is not null) return _static;
        lock (_lock) return _nodes.GetValueOrDefault(node);
    }

    /// <summary>Adds or replaces a node (a new address replaces its client).</summary>
    public void Up(NodeClient node)
    {
        lock (_lock) _nodes[node.Name] = node;
    }

    public void Down(string name)
    {
        lock (_lock) _nodes.Remove(name);
    }

    /// <summary>Records where a workload is (loaded from the store, or placed by hand).</summary>
    public void Assign(string workload, string node)
    {
        lock (_lock)
        {
            if (node.Length == 0) _assigned.Remove(workload);
            else _assigned[workload] = node;
        }
    }

    /// <summary>Whether <paramref name="node"/> is registered and may run a workload with <paramref name="placement"/>.</summary>
    public bool Fits(Placement? placement, string node)
    {
        if (_static is not null) return true;
        var selector = Selector(placement);
        lock (_lock) return _nodes.TryGetValue(node, out var n) && Matches(placement, selector, n);
    }

    /// <summary>The placement's node selector, parsed once per decision (validated when the workload was applied).</summary>
    private static LabelSelector Selector(Placement? placement) =>
        LabelSelector.TryParse(placement?.NodeSelector ?? "", out _) ?? LabelSelector.Everything;

    private static bool Matches(Placement? placement, LabelSelector selector, NodeClient node) =>
        (placement is not { NodeName.Length: > 0 } || placement.NodeName == node.Name) && selector.Matches(node.Labels);

    /// <summary>
    /// Places <paramref name="workload"/>: the eligible node with the fewest workloads, counted at once. Null, with the
    /// reason a person reads in the workload's status, when no node fits. Static: always the one launcher (name "").
    /// </summary>
    public string? Place(string workload, Placement? placement, out string reason)
    {
        reason = "";
        if (_static is not null) return "";
        lock (_lock)
        {
            if (_nodes.Count == 0)
            {
                reason = "no node is registered (no launcher has announced itself in the registry)";
                return null;
            }
            var counts = _assigned.Where(a => a.Key != workload).GroupBy(a => a.Value).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
            var selector = Selector(placement);
            var matching = _nodes.Values.Where(n => Matches(placement, selector, n)).ToList();
            if (matching.Count == 0)
            {
                reason = placement is { NodeName.Length: > 0 }
                    ? $"node '{placement.NodeName}' is not registered{(placement.NodeSelector.Length > 0 ? $" or does not match '{placement.NodeSelector}'" : "")} (nodes: {string.Join(", ", _nodes.Keys.Order(StringComparer.Ordinal))})"
                    : $"no node matches the node selector '{placement?.NodeSelector}' (nodes: {string.Join("; ", _nodes.Values.OrderBy(n => n.Name, StringComparer.Ordinal).Select(n => $"{n.Name} {{{string.Join(",", n.Labels.Select(l => $"{l.Key}={l.Value}"))}}}"))})";
                return null;
            }
            var ready = matching.Where(n => n.Ready).ToList();
            if (ready.Count == 0)
            {
                reason = $"the matching nodes ({string.Join(", ", matching.Select(n => n.Name))}) are not reconciled yet";
                return null;
            }
            var room = ready.Where(n => n.Capacity <= 0 || counts.GetValueOrDefault(n.Name) < n.Capacity).ToList();
            if (room.Count == 0)
            {
                reason = $"the matching nodes are full ({string.Join(", ", ready.Select(n => $"{n.Name} {counts.GetValueOrDefault(n.Name)}/{n.Capacity}"))})";
                return null;
            }
            var chosen = room.OrderBy(n => counts.GetValueOrDefault(n.Name)).ThenBy(n => n.Name, StringComparer.Ordinal).First();
            _assigned[workload] = chosen.Name;
            return chosen.Name;
        }
    }

    /// <summary>A channel to a node's own address, with the platform's retry policy and bearer token.</summary>
    public static GrpcChannel Channel(string address, PlatformTokens tokens) =>
        GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = new BearerTokenHandler(tokens) { InnerHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true, PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan } },
            ServiceConfig = new ServiceConfig { MethodConfigs = { Microsoft.Extensions.Hosting.Extensions.DefaultRetry } },
        });
}
