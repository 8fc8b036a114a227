namespace Platform.AppHost.Hosting;

/// <summary>
/// Writes resource output with the resource's name as a prefix (coloured on a terminal) and the engine's own
/// messages, each state transition once.
/// </summary>
public sealed class ConsoleReporter(TextWriter output, bool color, IEnumerable<string> names)
{
    private static readonly string[] Palette = ["36", "35", "33", "32", "34", "96", "95", "93"];
    private readonly string[] _names = names.ToArray();
    private readonly int _width = Math.Max(7, names.Select(n => n.Length).DefaultIfEmpty(0).Max());

    public void ResourceLine(string resource, string line, bool isError)
    {
        var index = Array.IndexOf(_names, resource);
        var prefix = resource.PadRight(_width);
        if (color)
        {
            var code = Palette[Math.Max(0, index) % Palette.Length];
            output.WriteLine(isError ? $"\e[{code}m{prefix} |\e[0m \e[31m{line}\e[0m" : $"\e[{code}m{prefix} |\e[0m {line}");
        }
        else
        {
            output.WriteLine($"{prefix} | {line}");
        }
    }

    public void Info(string message) =>
        output.WriteLine(color ? $"\e[1m{"apphost".PadRight(_width)} |\e[0m {message}" : $"{"apphost".PadRight(_width)} | {message}");

    public void Error(string message) =>
        output.WriteLine(color ? $"\e[1;31mapphost: error: {message}\e[0m" : $"apphost: error: {message}");

    /// <summary>The table of resources and their endpoints.</summary>
    public void Table(IEnumerable<ResourceSnapshot> resources)
    {
        var rows = resources.Select(r => new[]
        {
            r.Name, r.State.ToString(), r.Health.ToString(), r.Pid?.ToString() ?? "-",
            r.Endpoints.GetValueOrDefault("grpc") ?? "-", r.Endpoints.GetValueOrDefault("http") ?? "-",
        }).Prepend(["Resource", "State", "Health", "PID", "gRPC", "HTTP"]).ToList();
        var widths = Enumerable.Range(0, 6).Select(i => rows.Max(row => row[i].Length)).ToArray();
        foreach (var row in rows)
            output.WriteLine("  " + string.Join("  ", row.Select((cell, i) => cell.PadRight(widths[i]))).TrimEnd());
    }
}
