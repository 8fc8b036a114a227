namespace Platform.ServiceDefaults;

/// <summary>
/// How a Launcher announces its node in the registry, and how the Supervisor reads it: a session of the reserved
/// workload <see cref="Workload"/> whose instance is the node's name, labelled with the node's labels, with its gRPC
/// address, capacity and containment mode as attributes, under a lease the Launcher renews. A node whose session
/// expires (or is ended) is lost.
/// </summary>
public static class Nodes
{
    /// <summary>The reserved workload name of node sessions.</summary>
    public const string Workload = "platform-node";

    /// <summary>The node's own gRPC address (http://host:port), reachable from the Supervisor.</summary>
    public const string AddressAttribute = "address";

    /// <summary>How many running instances the node takes (0: no limit).</summary>
    public const string CapacityAttribute = "capacity";

    /// <summary>How the node contains its instances (cgroup or subreaper).</summary>
    public const string ContainmentAttribute = "containment";
}
