using System.Text;
using Platform.ProcessControl;

namespace Platform.Testing.Chaos;

/// <summary>
/// Reads /proc every <c>interval</c> for the processes of one run's workloads (<c>variable</c>=<c>run</c> in their
/// environment; the launcher adds PLATFORM_WORKLOAD and PLATFORM_INSTANCE_ID) and records what must never happen: two instances of one workload alive at once (two distinct
/// PLATFORM_INSTANCE_ID among a workload's live processes), and, for the workloads that never exit by themselves, a
/// second main process or a sample without one. A successor held at its gate before its exec (the launcher's
/// <c>/bin/sh</c> reading fd 3) is not running yet and is not counted.
/// </summary>
public sealed class InstanceSampler(string variable, string run, Func<string, bool> isSteady, TimeSpan interval) : IAsyncDisposable
{
    private readonly byte[] _marker = Encoding.UTF8.GetBytes($"{variable}={run}\0");
    private readonly CancellationTokenSource _stop = new();
    private readonly Dictionary<string, HashSet<int>> _steadyPids = [];
    private readonly Dictionary<string, int> _steadyMissing = [];
    private readonly List<string> _doubles = [];
    private Task _loop = Task.CompletedTask;

    public int Samples { get; private set; }

    /// <summary>Each time a workload had two live instances: when, which workload, which instances.</summary>
    public IReadOnlyList<string> Doubles { get { lock (_doubles) return [.. _doubles]; } }

    /// <summary>Steady workloads whose main process changed (restarted) or was missing from a sample after it was first seen.</summary>
    public IReadOnlyList<string> SteadyInterruptions
    {
        get
        {
            lock (_doubles)
                return [.. _steadyPids.Where(p => p.Value.Count > 1).Select(p => $"{p.Key}: main processes {string.Join(", ", p.Value)}")
                    .Concat(_steadyMissing.Where(m => m.Value > 0).Select(m => $"{m.Key}: no main process in {m.Value} samples"))];
        }
    }

    public void Start() => _loop = Task.Run(LoopAsync);

    private async Task LoopAsync()
    {
        using var timer = new PeriodicTimer(interval);
        try
        {
            do Sample();
            while (await timer.WaitForNextTickAsync(_stop.Token));
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>One pass over /proc: live processes of the chaos workloads, by workload, with their instance and whether each is a main process.</summary>
    public Dictionary<string, List<(int Pid, string Instance, bool Main)>> Scan()
    {
        var seen = new List<(int Pid, int Parent, string Workload, string Instance)>();
        foreach (var pid in ProcFs.Pids())
        {
            try
            {
                if (ProcFs.ReadStat(pid) is not { IsZombie: false } stat) continue;
                var environ = File.ReadAllBytes($"/proc/{pid}/environ");
                if (environ.AsSpan().IndexOf(_marker) < 0) continue;
                var cmdline = File.ReadAllText($"/proc/{pid}/cmdline");
                if (cmdline.Contains("read -r _ <&3", StringComparison.Ordinal)) continue; // held at the launcher's gate, not started
                string? workload = null, instance = null;
                foreach (var entry in Encoding.UTF8.GetString(environ).Split('\0'))
                {
                    if (entry.StartsWith("PLATFORM_WORKLOAD=", StringComparison.Ordinal)) workload = entry["PLATFORM_WORKLOAD=".Length..];
                    else if (entry.StartsWith("PLATFORM_INSTANCE_ID=", StringComparison.Ordinal)) instance = entry["PLATFORM_INSTANCE_ID=".Length..];
                }
                if (workload is not null && instance is not null) seen.Add((pid, stat.ParentPid, workload, instance));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // gone between the listing and the read
            }
        }
        // The instance's main process is the one whose parent is not a process of the same instance.
        var ofInstance = seen.Select(p => (p.Pid, p.Instance)).ToHashSet();
        return seen.GroupBy(p => p.Workload).ToDictionary(g => g.Key,
            g => g.Select(p => (p.Pid, p.Instance, !ofInstance.Contains((p.Parent, p.Instance)))).ToList());
    }

    private void Sample()
    {
        var found = Scan();
        lock (_doubles)
        {
            Samples++;
            foreach (var (workload, processes) in found)
            {
                var instances = processes.Select(p => p.Instance).Distinct().ToList();
                if (instances.Count > 1)
                    _doubles.Add($"{DateTime.UtcNow:HH:mm:ss.fff} {workload}: {string.Join(", ", processes.Select(p => $"{p.Pid} of {p.Instance}"))}");
                if (isSteady(workload))
                {
                    if (!_steadyPids.TryGetValue(workload, out var pids)) _steadyPids[workload] = pids = [];
                    pids.UnionWith(processes.Where(p => p.Main).Select(p => p.Pid));
                }
            }
            foreach (var workload in _steadyPids.Keys)
            {
                if (!found.ContainsKey(workload)) _steadyMissing[workload] = _steadyMissing.GetValueOrDefault(workload) + 1;
            }
        }
    }

    /// <summary>Stops sampling (before the workloads are stopped on purpose).</summary>
    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await _loop;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }
}
