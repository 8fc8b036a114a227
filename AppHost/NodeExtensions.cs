using Aspire.Hosting.ApplicationModel;

namespace Aspire.Hosting;

/// <summary>
/// Several launchers on one machine, each a node of its own (<c>--nodes N</c> or <c>Platform__Nodes=N</c>): what a
/// cluster with one launcher per node looks like, for local work. Node i is the resource <c>launcher</c> (i = 1) or
/// <c>launcher-i</c>, named <c>node-i</c>, labelled <c>node=node-i</c>, with its own data directory; it announces
/// itself in the registry, and the Supervisor places workloads on the nodes (Supervisor:Nodes=registry). Without the
/// option there is one launcher, known to the Supervisor by its service name, as before.
/// </summary>
public static class NodeExtensions
{
    /// <summary>The number of nodes asked for (0: one launcher, no nodes) and the arguments without the option.</summary>
    public static (int Nodes, string[] Others) NodesOption(string[] args)
    {
        var rest = new List<string>();
        var nodes = int.TryParse(Environment.GetEnvironmentVariable("Platform__Nodes"), out var fromEnvironment) ? fromEnvironment : 0;
        for (var i = 0; i < args.Length; i++)
        {
            if (args[i] == "--nodes" && i + 1 < args.Length && int.TryParse(args[i + 1], out var n)) { nodes = n; i++; }
            else if (args[i].StartsWith("--nodes=", StringComparison.Ordinal) && int.TryParse(args[i]["--nodes=".Length..], out var m)) nodes = m;
            else rest.Add(args[i]);
        }
        if (nodes is < 0 or > 16) throw new ArgumentOutOfRangeException(nameof(args), nodes, "--nodes takes 1 to 16");
        return (nodes, [.. rest]);
    }

    /// <summary>The launchers: one (the "launcher" service) when <paramref name="nodes"/> is 0, else one per node.</summary>
    public static IReadOnlyList<IResourceBuilder<ProjectResource>> AddLaunchers(this IDistributedApplicationBuilder builder, int nodes,
        Func<IResourceBuilder<ProjectResource>, IResourceBuilder<ProjectResource>> configure)
    {
        if (nodes == 0) return [configure(builder.AddProject<Projects.Platform_Launcher>("launcher"))];
        return [.. Enumerable.Range(1, nodes).Select(i =>
        {
            var node = "node-" + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var launcher = builder.AddProject<Projects.Platform_Launcher>(i == 1 ? "launcher" : "launcher-" + i.ToString(System.Globalization.CultureInfo.InvariantCulture));
            // The first keeps the launcher's fixed ports (appsettings.json); the others take free ones.
            if (i > 1) launcher.WithEndpoint("grpc", e => e.Port = null).WithEndpoint("http", e => e.Port = null);
            return configure(launcher)
                .WithEnvironment("Launcher__RegisterNode", "true")
                .WithEnvironment("Launcher__Node", node)
                .WithEnvironment("Launcher__Labels__node", node);
        })];
    }

    /// <summary>The Supervisor's launchers: the one by its service name, or the nodes through the registry. It waits for all.</summary>
    public static IResourceBuilder<ProjectResource> WithLaunchers(this IResourceBuilder<ProjectResource> supervisor, IReadOnlyList<IResourceBuilder<ProjectResource>> launchers, int nodes)
    {
        foreach (var launcher in launchers)
        {
            if (nodes == 0) supervisor.WithReference(launcher);
            supervisor.WaitFor(launcher);
        }
        if (nodes > 0) supervisor.WithEnvironment("Supervisor__Nodes", "registry");
        return supervisor;
    }
}
