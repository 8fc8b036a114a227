namespace Platform.Testing.Chaos;

/// <summary>A <see cref="ChaosReport"/> as the tables `bench reliability` and the chaos test print.</summary>
public static class ChaosTable
{
    public static IEnumerable<string> Lines(ChaosReport report)
    {
        var rows = new List<string[]> { new[] { "faults", "injected", "checked", "lost", "duplicated", "orphaned" } };
        foreach (var (service, kills) in report.Kills)
        {
            var sorted = kills.Order().ToList();
            rows.Add([$"SIGKILL {service}", $"{kills.Count}", $"serving again in {sorted[sorted.Count / 2]:0} ms median, {sorted[^1]:0} max", "", "", ""]);
        }
        rows.Add(["sessions", "", $"{report.SessionsAcknowledged} acknowledged", $"{report.SessionsLost.Count}", "", ""]);
        rows.Add(["workloads", "", $"{report.WorkloadsAcknowledged} acknowledged, {report.Samples} /proc samples",
            $"{report.WorkloadsLost.Count} (+{report.Interrupted.Count} steady ones interrupted)", $"{report.Doubled.Count} samples with two instances", $"{report.Orphans.Count}"]);
        foreach (var (name, connections, events, faults) in report.Watchers)
            rows.Add([name, "", $"{connections} streams, {events} events", "", $"{faults.Count} gaps or duplicates", ""]);
        foreach (var line in Render(rows)) yield return line;

        yield return "";
        var minutes = report.SoakSettledFor.TotalMinutes;
        var soak = new List<string[]> { new[] { $"soak ({report.SoakDuration.TotalSeconds:0} s)", "start", "settled (a third in)", "end", "RSS after settling" } };
        foreach (var (name, start, settled, end) in report.Soak)
            soak.Add(name == "workload processes"
                ? [name, $"{start.Threads}", $"{settled.Threads}", $"{end.Threads}", ""]
                : [name, start.ToString(), settled.ToString(), end.ToString(), minutes > 0 ? $"{(end.RssMiB - settled.RssMiB) / minutes:+0.0;-0.0} MiB/min" : ""]);
        foreach (var line in Render(soak)) yield return line;

        var failures = report.Failures.ToList();
        foreach (var failure in failures.Take(40)) yield return "FAILED: " + failure;
        if (failures.Count > 40) yield return $"FAILED: and {failures.Count - 40} more";
    }

    /// <summary>A markdown table of <paramref name="rows"/>, the first being the header.</summary>
    public static IEnumerable<string> Render(IReadOnlyList<string[]> rows)
    {
        var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        string Line(string[] r) => "| " + string.Join(" | ", r.Select((cell, c) => cell.PadRight(widths[c]))) + " |";
        yield return Line(rows[0]);
        yield return "|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|";
        foreach (var r in rows.Skip(1)) yield return Line(r);
    }
}
