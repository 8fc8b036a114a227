namespace Platform.ServiceDefaults;

/// <summary>
/// A Kubernetes-style equality selector: "key=value", "key==value", "key!=value", "key" (exists), "!key" (absent),
/// joined by commas; every requirement must hold.
/// </summary>
public sealed class LabelSelector
{
    private enum Op { Equals, NotEquals, Exists, NotExists }

    private readonly List<(string Key, Op Op, string Value)> _requirements;

    private LabelSelector(List<(string, Op, string)> requirements) => _requirements = requirements;

    public static LabelSelector Everything { get; } = new([]);

    public bool IsEmpty => _requirements.Count == 0;

    /// <summary>Parses a selector; null with an error message when it is malformed.</summary>
    public static LabelSelector? TryParse(string text, out string? error)
    {
        error = null;
        if (string.IsNullOrWhiteSpace(text)) return Everything;
        var requirements = new List<(string, Op, string)>();
        foreach (var raw in text.Split(','))
        {
            var part = raw.Trim();
            (string Key, Op Op, string Value) requirement;
            if (part.Contains("!=")) requirement = Split(part, "!=", Op.NotEquals);
            else if (part.Contains("==")) requirement = Split(part, "==", Op.Equals);
            else if (part.Contains('=')) requirement = Split(part, "=", Op.Equals);
            else if (part.StartsWith('!')) requirement = (part[1..].Trim(), Op.NotExists, "");
            else requirement = (part, Op.Exists, "");

            if (requirement.Key.Length == 0 || requirement.Key.Any(c => char.IsWhiteSpace(c) || c is '=' or '!' or ','))
            {
                error = $"'{part}' is not a requirement (use key=value, key!=value, key or !key)";
                return null;
            }
            requirements.Add(requirement);
        }
        return new LabelSelector(requirements);
    }

    private static (string, Op, string) Split(string part, string separator, Op op)
    {
        var at = part.IndexOf(separator, StringComparison.Ordinal);
        return (part[..at].Trim(), op, part[(at + separator.Length)..].Trim());
    }

    public bool Matches(IReadOnlyDictionary<string, string> labels)
    {
        foreach (var (key, op, value) in _requirements)
        {
            var has = labels.TryGetValue(key, out var actual);
            var ok = op switch
            {
                Op.Equals => has && actual == value,
                Op.NotEquals => !has || actual != value,
                Op.Exists => has,
                _ => !has,
            };
            if (!ok) return false;
        }
        return true;
    }
}
