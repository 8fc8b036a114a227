using System.Text.RegularExpressions;
using Google.Protobuf.WellKnownTypes;
using Platform.Registry.V1;
using Platform.ServiceDefaults;

namespace Platform.SessionRegistry;

/// <summary>Checks requests at the edge: INVALID_ARGUMENT with one violation per field, never INTERNAL.</summary>
public static partial class Validation
{
    // Kubernetes label key: optional DNS subdomain prefix and '/', then a name of 1-63 [A-Za-z0-9._-], alphanumeric at both ends.
    [GeneratedRegex(@"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
    private static partial Regex LabelKey();

    [GeneratedRegex(@"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")]
    private static partial Regex LabelValue();

    public static void Check(RegisterSessionRequest request, RegistryOptions options)
    {
        var v = new Violations();
        WorkloadName.Check(v, "workload", request.Workload);
        Name(v, "instance", request.Instance);
        if (request.Node.Length > Limits.NameLength) v.Add("node", $"must be at most {Limits.NameLength} characters");
        if (request.Pid < 0) v.Add("pid", "must not be negative");
        Labels(v, request.Labels);
        Attributes(v, request.Attributes);
        if (request.Ttl is not null) Ttl(v, request.Ttl, options);
        if (request.RequestId.Length > Limits.RequestIdLength) v.Add("request_id", $"must be at most {Limits.RequestIdLength} characters");
        v.ThrowIfAny();
    }

    public static void CheckIds(IReadOnlyCollection<string> ids, string field)
    {
        var v = new Violations();
        if (ids.Count == 0) v.Add(field, "must name at least one session");
        if (ids.Count > Limits.HeartbeatBatch) v.Add(field, $"must name at most {Limits.HeartbeatBatch} sessions");
        var index = 0;
        foreach (var id in ids)
        {
            if (!IsId(id)) v.Add($"{field}[{index}]", $"'{Shorten(id)}' is not a session id (a 26-character ULID)");
            index++;
        }
        v.ThrowIfAny();
    }

    public static void CheckId(string id, string field = "id")
    {
        if (!IsId(id)) throw PlatformException.Invalid(field, $"'{Shorten(id)}' is not a session id (a 26-character ULID)");
    }

    public static bool IsId(string id) => id.Length == 26 && System.Ulid.TryParse(id, out _);

    public static void CheckReason(string reason)
    {
        if (reason.Length > Limits.ReasonLength) throw PlatformException.Invalid("reason", $"must be at most {Limits.ReasonLength} characters");
    }

    private static void Name(Violations v, string field, string value)
    {
        if (string.IsNullOrWhiteSpace(value)) v.Add(field, "must not be empty");
        else if (value.Length > Limits.NameLength) v.Add(field, $"must be at most {Limits.NameLength} characters (got {value.Length})");
        else if (value.Any(char.IsControl)) v.Add(field, "must not contain control characters");
    }

    private static void Labels(Violations v, IDictionary<string, string> labels)
    {
        if (labels.Count > Limits.Labels) v.Add("labels", $"must have at most {Limits.Labels} entries (got {labels.Count})");
        foreach (var (key, value) in labels)
        {
            if (key.Length > Limits.NameLength || !LabelKey().IsMatch(key))
                v.Add($"labels[{Shorten(key)}]", "key must be a label name of 1-63 letters, digits, '-', '_' or '.', optionally prefixed by a DNS name and '/'");
            if (value.Length > Limits.LabelValueLength || !LabelValue().IsMatch(value))
                v.Add($"labels[{Shorten(key)}]", $"value must be at most {Limits.LabelValueLength} letters, digits, '-', '_' or '.', alphanumeric at both ends");
        }
    }

    private static void Attributes(Violations v, IDictionary<string, string> attributes)
    {
        if (attributes.Count > Limits.Attributes) v.Add("attributes", $"must have at most {Limits.Attributes} entries (got {attributes.Count})");
        foreach (var (key, value) in attributes)
        {
            if (key.Length == 0 || key.Length > Limits.AttributeKeyLength) v.Add($"attributes[{Shorten(key)}]", $"key must be 1-{Limits.AttributeKeyLength} characters");
            if (value.Length > Limits.AttributeValueLength) v.Add($"attributes[{Shorten(key)}]", $"value must be at most {Limits.AttributeValueLength} characters");
        }
    }

    private static void Ttl(Violations v, Duration ttl, RegistryOptions options)
    {
        if (ttl.Nanos < 0 || ttl.Seconds < 0 || !Durations.IsValid(ttl))
        {
            v.Add("ttl", "must be a valid positive duration");
            return;
        }
        var value = ttl.ToTimeSpan();
        if (value < options.MinTtl || value > options.MaxTtl)
            v.Add("ttl", $"must be between {options.MinTtl.TotalSeconds:0.###} s and {options.MaxTtl.TotalSeconds:0} s (got {value.TotalSeconds:0.###} s)");
    }

    private static string Shorten(string value) => value.Length <= 40 ? value : value[..40] + "...";
}
