using Google.Rpc;

namespace Platform.ServiceDefaults;

/// <summary>Collects field violations of one request; throws them all at once.</summary>
public sealed class Violations
{
    private readonly List<BadRequest.Types.FieldViolation> _violations = [];

    public bool Any => _violations.Count > 0;

    public void Add(string field, string description) =>
        _violations.Add(new BadRequest.Types.FieldViolation { Field = field, Description = description });

    /// <summary>"field: description; field: description".</summary>
    public override string ToString() => Describe(_violations);

    /// <summary>Violations in one line, as a person reads them: "field: description; field: description".</summary>
    public static string Describe(IEnumerable<BadRequest.Types.FieldViolation> violations) =>
        string.Join("; ", violations.Select(v => $"{v.Field}: {v.Description}"));

    public void ThrowIfAny()
    {
        if (Any) throw PlatformException.Invalid(_violations);
    }
}
