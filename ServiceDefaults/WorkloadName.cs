using System.Text;
using System.Text.RegularExpressions;

namespace Platform.ServiceDefaults;

/// <summary>
/// What a workload name is, everywhere in the platform (the registry's sessions, the launcher's instances, the
/// monitor's targets, the supervisor's workloads): a DNS label, as Kubernetes names are, so that a name is valid as
/// a label value, a file name, a metric tag and a Kubernetes object name alike.
/// </summary>
public static partial class WorkloadName
{
    public const int MaxLength = 63;

    public const string Rule = "1-63 lowercase letters, digits and '-', starting and ending with a letter or digit";

    [GeneratedRegex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    private static partial Regex Pattern();

    public static bool IsValid(string name) => Pattern().IsMatch(name);

    /// <summary>Adds a violation of <paramref name="field"/> when <paramref name="name"/> is not a workload name.</summary>
    public static void Check(Violations violations, string field, string name)
    {
        if (string.IsNullOrWhiteSpace(name)) violations.Add(field, "must not be empty");
        else if (!IsValid(name)) violations.Add(field, $"'{(name.Length > 80 ? name[..80] + "..." : name)}' is not a name: {Rule}");
    }

    /// <summary>A workload name made from something else (a template or an executable's file name): lowercased,
    /// every other character a '-', trimmed to 63; "workload" when nothing is left.</summary>
    public static string From(string text)
    {
        var name = new StringBuilder(Math.Min(text.Length, MaxLength));
        foreach (var c in text.ToLowerInvariant())
        {
            if (name.Length == MaxLength) break;
            var ok = c is >= 'a' and <= 'z' or >= '0' and <= '9';
            if (ok) name.Append(c);
            else if (name.Length > 0 && name[^1] != '-') name.Append('-');
        }
        var result = name.ToString().Trim('-');
        return result.Length > 0 ? result : "workload";
    }
}
