namespace Platform.Bench;

/// <summary>The table every benchmark ends with: metric, the figure of the tool it replaces, ours, the target, met.
/// Returns the exit code: 0 when every target is met.</summary>
internal static class Table
{
    public static int Print(string othersHeader, IReadOnlyList<(string Metric, string Others, string Ours, string Target, bool Met)> rows)
    {
        var w = new[]
        {
            Math.Max(6, rows.Max(r => r.Metric.Length)),
            Math.Max(othersHeader.Length, rows.Max(r => r.Others.Length)),
            Math.Max(4, rows.Max(r => r.Ours.Length)),
            Math.Max(6, rows.Max(r => r.Target.Length)),
        };
        Console.WriteLine();
        Console.WriteLine($"| {"metric".PadRight(w[0])} | {othersHeader.PadRight(w[1])} | {"ours".PadLeft(w[2])} | {"target".PadRight(w[3])} | met |");
        Console.WriteLine($"|{new string('-', w[0] + 2)}|{new string('-', w[1] + 2)}|{new string('-', w[2] + 2)}|{new string('-', w[3] + 2)}|-----|");
        foreach (var (metric, others, ours, target, met) in rows)
            Console.WriteLine($"| {metric.PadRight(w[0])} | {others.PadRight(w[1])} | {ours.PadLeft(w[2])} | {target.PadRight(w[3])} | {(met ? "yes" : "NO"),-3} |");
        return rows.All(r => r.Met) ? 0 : 1;
    }
}
