using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.ServiceDefaults;

namespace Platform.Launcher;

/// <summary>
/// What keeps every process of an instance findable, so that a stop leaves nothing, whatever the instance forked.
/// <list type="bullet">
/// <item><b>cgroup</b> (where the cgroup v2 hierarchy is writable): each instance in a cgroup of its own under the
/// launcher's subtree, placed there before its first instruction; a stop signals every member, then writes
/// <c>cgroup.kill</c>; nothing escapes it, not setsid, not a parent that exits, not a cleared environment.</item>
/// <item><b>subreaper</b> (the fallback): the instance's tree below its main process, plus every process whose
/// environment still holds the instance's <c>PLATFORM_INSTANCE_ID</c> (an orphan re-parented to the launcher, which
/// is the child subreaper, keeps it). It cannot find a process that clears its environment and whose parent has
/// exited.</item>
/// </list>
/// When the main process exits by itself, what it left behind is killed too unless the launch asked to keep it.
/// </summary>
public sealed class Containment : IHealthCheck
{
    private readonly CgroupTree? _tree;
    private readonly ILogger _logger;

    public Containment(IOptions<LauncherOptions> options, IConfiguration configuration, ILogger<Containment> logger)
    {
        _logger = logger;
        var o = options.Value;
        var mode = o.Containment.Trim().ToLowerInvariant();
        if (mode is not ("auto" or "cgroup" or "subreaper"))
            throw new InvalidOperationException($"Launcher:Containment is '{o.Containment}'; it must be auto, cgroup or subreaper");
        if (mode != "subreaper")
        {
            // One subtree per data directory: a restarted launcher finds its instances' cgroups again.
            var dataDirectory = Path.GetFullPath(DataDirectory.Resolve(configuration, o.DataDirectory));
            var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(dataDirectory)))[..12];
            _tree = CgroupTree.TryOpen($"platform-launcher-{hash}", o.CgroupParent, out var reason);
            if (_tree is null && mode == "cgroup")
                throw new InvalidOperationException($"Launcher:Containment is cgroup, but {reason}");
            Description = _tree is not null
                ? $"cgroup: every instance in a cgroup v2 group of its own under {_tree.Root}"
                : $"subreaper: {reason}; orphans are found by their PLATFORM_INSTANCE_ID, a process that clears its environment after its parent exits is not";
        }
        else Description = "subreaper (configured): orphans are found by their PLATFORM_INSTANCE_ID, a process that clears its environment after its parent exits is not";
        logger.LogInformation("Containment: {Description}", Description);
    }

    public bool UsesCgroups => _tree is not null;

    /// <summary>Which containment is in force, in a sentence (the "containment" entry of /health).</summary>
    public string Description { get; }

    /// <summary>The cgroup a new instance starts in (created now), or null without cgroups.</summary>
    public string? Prepare(string instanceId) => _tree?.Create(instanceId);

    /// <summary>Removes a prepared cgroup that was not used.</summary>
    public void Discard(string? cgroup)
    {
        if (cgroup is not null) Cgroup.Remove(cgroup);
    }

    /// <summary>The live processes of an instance: its cgroup's members, or its tree (and orphans) without one.</summary>
    public List<ProcStat> Members(Instance instance)
    {
        if (instance.Cgroup.Length > 0)
            return [.. Cgroup.Members(instance.Cgroup).Select(ProcFs.ReadStat).Where(s => s is { IsZombie: false }).Select(s => s!.Value).OrderBy(s => s.Pid != instance.Pid)];
        return ProcFs.Tree((int)instance.Pid);
    }

    /// <summary>Stops every process of the instance: SIGTERM, the grace, then SIGKILL (<c>cgroup.kill</c> in a cgroup).</summary>
    public async Task<StopResult> StopAsync(Instance instance, ProcessIdentity root, TimeSpan grace, CancellationToken cancellationToken)
    {
        if (instance.Cgroup.Length > 0 && Directory.Exists(instance.Cgroup))
            return await ProcessTree.StopCgroupAsync(instance.Cgroup, grace, cancellationToken);
        return await ProcessTree.StopAsync(root, grace, () => Orphans(instance.Id), cancellationToken);
    }

    /// <summary>After the main process has ended: what it left behind is killed (unless the launch asked to keep it)
    /// and its cgroup removed once empty.</summary>
    public async Task CleanUpAsync(Instance instance)
    {
        try
        {
            if (instance.Cgroup.Length > 0)
            {
                if (!instance.KeepDescendants && !await Cgroup.KillAsync(instance.Cgroup, TimeSpan.FromSeconds(5)))
                    _logger.LogWarning("Instance {Id}: processes survived cgroup.kill in {Cgroup}", instance.Id, instance.Cgroup);
                if (!Cgroup.IsPopulated(instance.Cgroup)) Cgroup.Remove(instance.Cgroup);
            }
            else if (!instance.KeepDescendants)
            {
                ProcessTree.Signal(Orphans(instance.Id), ProcessTree.SIGKILL);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _logger.LogWarning("Instance {Id}: could not clean up after its exit: {Error}", instance.Id, e.Message);
        }
    }

    private static List<ProcessIdentity> Orphans(string instanceId) => ProcFs.WithEnvironment("PLATFORM_INSTANCE_ID", instanceId);

    /// <summary>At the start: removes the empty cgroups of instances that no longer run (a launcher killed before it
    /// could remove them).</summary>
    public void RemoveUnused(IReadOnlySet<string> running)
    {
        if (_tree is null || !Directory.Exists(_tree.Root)) return;
        foreach (var cgroup in Directory.EnumerateDirectories(_tree.Root))
            if (!running.Contains(Path.GetFileName(cgroup)) && !Cgroup.IsPopulated(cgroup)) Cgroup.Remove(cgroup);
    }

    /// <summary>Removes the subtree if it is empty (at the launcher's stop: running instances keep theirs).</summary>
    public void Close() => _tree?.TryRemove();

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(HealthCheckResult.Healthy(Description, new Dictionary<string, object> { ["mode"] = UsesCgroups ? "cgroup" : "subreaper" }));
}
