using System.Globalization;
using System.Text;
using System.Text.Json;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Platform.Supervisor.V1;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Platform.Manifests;

/// <summary>
/// Workloads from YAML or JSON: one workload, a list of them, <c>workloads: [...]</c>, or several YAML documents.
/// Fields are the contract's (protos/platform/supervisor/v1/supervisor.proto), in lowerCamel or snake_case. Each node
/// is checked against the contract's descriptors here, so an unknown field or a wrong type is reported with its line;
/// durations may be written as 500ms, 1.5s, 2m, 1h30m; enum values in any case, with '-' for '_'
/// (on-failure). The checked tree then goes to protobuf's own JSON parser.
/// </summary>
public static class Manifest
{
    public static List<Workload> Read(string text, string source, Func<string, string?>? environment = null)
    {
        var roots = new List<YamlNode>();
        try
        {
            var stream = new YamlStream();
            stream.Load(new StringReader(text));
            roots.AddRange(stream.Documents.Select(d => d.RootNode));
        }
        catch (YamlException e)
        {
            throw new ManifestException($"{source}:{e.Start.Line}: not YAML or JSON: {e.InnerException?.Message ?? e.Message}");
        }
        // Values only (as compose does), not comments or keys.
        foreach (var root in roots) InterpolateValues(root, source, environment ?? Environment.GetEnvironmentVariable);
        var workloads = new List<Workload>();
        foreach (var root in roots)
        {
            switch (root)
            {
                case YamlSequenceNode list:
                    workloads.AddRange(list.Children.Select(n => One(n, source)));
                    break;
                case YamlMappingNode map when map.Children.Count == 1 && Key(map.Children.Keys.First()) == "workloads":
                    if (map.Children.Values.First() is not YamlSequenceNode items) throw Wrong(map, source, "'workloads' must be a list");
                    workloads.AddRange(items.Children.Select(n => One(n, source)));
                    break;
                case YamlScalarNode { Value: null or "" }:
                    break; // an empty document (a trailing '---')
                default:
                    workloads.Add(One(root, source));
                    break;
            }
        }
        if (workloads.Count == 0) throw new ManifestException($"{source}: no workloads in it");
        var twice = workloads.GroupBy(w => w.Name).FirstOrDefault(g => g.Count() > 1);
        if (twice is not null) throw new ManifestException($"{source}: workload '{twice.Key}' is declared twice");
        return workloads;
    }

    /// <summary>
    /// <c>${NAME}</c> and <c>${NAME:-default}</c> from the environment, as docker compose does, so that one file serves
    /// any checkout (<c>${PWD}</c>); <c>$${</c> is a literal <c>${</c>. A name that is not set, without a default, is
    /// an error rather than an empty string. A <c>$</c> not followed by <c>{</c> (a shell script's <c>$i</c>) is left alone.
    /// </summary>
    public static string Interpolate(string text, string source, Func<string, string?> environment, int firstLine = 1)
    {
        if (!text.Contains("${", StringComparison.Ordinal)) return text;
        var result = new StringBuilder(text.Length);
        for (var i = 0; i < text.Length; i++)
        {
            if (text[i] != '$' || i + 1 >= text.Length) { result.Append(text[i]); continue; }
            if (text[i + 1] == '$' && i + 2 < text.Length && text[i + 2] == '{') { result.Append("${"); i += 2; continue; }
            if (text[i + 1] != '{') { result.Append('$'); continue; }
            var end = text.IndexOf('}', i + 2);
            var line = text.AsSpan(0, i).Count('\n') + firstLine;
            if (end < 0) throw new ManifestException($"{source}:{line}: '${{' without its '}}' (write $${{ for a literal ${{)");
            var expression = text[(i + 2)..end];
            var dash = expression.IndexOf(":-", StringComparison.Ordinal);
            var name = dash < 0 ? expression : expression[..dash];
            if (name.Length == 0 || !name.All(ch => char.IsAsciiLetterOrDigit(ch) || ch == '_') || char.IsAsciiDigit(name[0]))
                throw new ManifestException($"{source}:{line}: '${{{expression}}}' is not ${{NAME}} or ${{NAME:-default}}");
            var value = environment(name);
            if (string.IsNullOrEmpty(value))
                value = dash >= 0 ? expression[(dash + 2)..] : throw new ManifestException($"{source}:{line}: ${{{name}}} is not set (set it, or write ${{{name}:-default}})");
            result.Append(value);
            i = end;
        }
        return result.ToString();
    }

    private static void InterpolateValues(YamlNode node, string source, Func<string, string?> environment)
    {
        switch (node)
        {
            case YamlScalarNode { Value: { } value } scalar:
                scalar.Value = Interpolate(value, source, environment, (int)scalar.Start.Line);
                break;
            case YamlSequenceNode list:
                foreach (var item in list.Children) InterpolateValues(item, source, environment);
                break;
            case YamlMappingNode map:
                foreach (var value in map.Children.Values) InterpolateValues(value, source, environment);
                break;
        }
    }

    private static Workload One(YamlNode node, string source)
    {
        if (node is not YamlMappingNode) throw Wrong(node, source, "a workload must be a mapping (name, launch, restartPolicy, ...)");
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer)) Write(json, node, Workload.Descriptor, source, "workload");
        try
        {
            var workload = JsonParser.Default.Parse<Workload>(Encoding.UTF8.GetString(buffer.ToArray()));
            if (workload.Name.Length == 0) throw Wrong(node, source, "a workload needs a name");
            return workload;
        }
        catch (InvalidProtocolBufferException e)
        {
            throw Wrong(node, source, e.Message);
        }
    }

    private static void Write(Utf8JsonWriter json, YamlNode node, MessageDescriptor message, string source, string path)
    {
        if (message.FullName == Google.Protobuf.WellKnownTypes.Duration.Descriptor.FullName)
        {
            json.WriteStringValue(Duration(node, source, path));
            return;
        }
        if (message.FullName == Google.Protobuf.WellKnownTypes.Timestamp.Descriptor.FullName)
        {
            json.WriteStringValue(Scalar(node, source, path)); // RFC 3339, as `get -o yaml` prints it (output-only fields)
            return;
        }
        if (node is not YamlMappingNode map) throw Wrong(node, source, $"{path} must be a mapping ({message.Name})");
        json.WriteStartObject();
        foreach (var (keyNode, value) in map.Children)
        {
            var key = Key(keyNode);
            var field = message.FindFieldByName(key) ?? message.Fields.InDeclarationOrder().FirstOrDefault(f => f.JsonName == key)
                ?? throw Wrong(keyNode, source, $"unknown field '{key}' in {path} (known: {string.Join(", ", message.Fields.InDeclarationOrder().Select(f => f.JsonName))})");
            json.WritePropertyName(field.JsonName);
            var inner = $"{path}.{field.JsonName}";
            if (field.IsMap)
            {
                if (value is not YamlMappingNode entries) throw Wrong(value, source, $"{inner} must be a mapping");
                var valueField = field.MessageType.FindFieldByNumber(2);
                json.WriteStartObject();
                foreach (var (k, v) in entries.Children)
                {
                    json.WritePropertyName(Key(k));
                    Value(json, v, valueField, source, $"{inner}.{Key(k)}");
                }
                json.WriteEndObject();
            }
            else if (field.IsRepeated)
            {
                if (value is not YamlSequenceNode items) throw Wrong(value, source, $"{inner} must be a list");
                json.WriteStartArray();
                foreach (var item in items.Children) Value(json, item, field, source, inner);
                json.WriteEndArray();
            }
            else Value(json, value, field, source, inner);
        }
        json.WriteEndObject();
    }

    private static void Value(Utf8JsonWriter json, YamlNode node, FieldDescriptor field, string source, string path)
    {
        switch (field.FieldType)
        {
            case FieldType.Message:
                Write(json, node, field.MessageType, source, path);
                return;
            case FieldType.Enum:
                var text = Scalar(node, source, path).ToUpperInvariant().Replace('-', '_');
                var values = field.EnumType.Values;
                var match = values.FirstOrDefault(v => v.Name == text) ?? values.FirstOrDefault(v => v.Name.EndsWith("_" + text, StringComparison.Ordinal))
                    ?? throw Wrong(node, source, $"{path} is one of {string.Join(", ", values.Where(v => v.Number != 0).Select(v => v.Name.ToLowerInvariant().Replace('_', '-')))}, not '{Scalar(node, source, path)}'");
                json.WriteStringValue(match.Name);
                return;
            case FieldType.Bool:
                var flag = Scalar(node, source, path);
                if (!bool.TryParse(flag, out var b)) throw Wrong(node, source, $"{path} must be true or false, not '{flag}'");
                json.WriteBooleanValue(b);
                return;
            case FieldType.String or FieldType.Bytes:
                json.WriteStringValue(Scalar(node, source, path));
                return;
            default: // numbers: protobuf's parser checks the range and says so
                var number = Scalar(node, source, path);
                if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out _)) throw Wrong(node, source, $"{path} must be a number, not '{number}'");
                json.WriteRawValue(number.StartsWith('.') ? "0" + number : number.StartsWith("+", StringComparison.Ordinal) ? number[1..] : number);
                return;
        }
    }

    /// <summary>A duration as protobuf's JSON writes it ("1.5s"), from 500ms, 1.5s, 90s, 2m, 1h30m or a bare number of seconds.</summary>
    private static string Duration(YamlNode node, string source, string path)
    {
        var text = Scalar(node, source, path).Trim();
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var bare)) return Seconds(bare);
        double total = 0;
        var i = 0;
        var any = false;
        while (i < text.Length)
        {
            var start = i;
            while (i < text.Length && (char.IsAsciiDigit(text[i]) || text[i] == '.')) i++;
            var unitStart = i;
            while (i < text.Length && char.IsAsciiLetter(text[i])) i++;
            if (start == unitStart || !double.TryParse(text[start..unitStart], NumberStyles.Float, CultureInfo.InvariantCulture, out var amount))
                throw Wrong(node, source, $"{path} is not a duration: '{text}' (write 500ms, 1.5s, 2m or 1h30m)");
            total += text[unitStart..i] switch
            {
                "ms" => amount / 1000,
                "s" => amount,
                "m" => amount * 60,
                "h" => amount * 3600,
                _ => throw Wrong(node, source, $"{path} is not a duration: '{text}' (units: ms, s, m, h)"),
            };
            any = true;
        }
        if (!any) throw Wrong(node, source, $"{path} is not a duration: '{text}'");
        return Seconds(total);
    }

    private static string Seconds(double seconds) => seconds.ToString("0.#########", CultureInfo.InvariantCulture) + "s";

    private static string Scalar(YamlNode node, string source, string path) =>
        node is YamlScalarNode scalar ? scalar.Value ?? "" : throw Wrong(node, source, $"{path} must be a single value, not a {(node is YamlSequenceNode ? "list" : "mapping")}");

    private static string Key(YamlNode node) => node is YamlScalarNode scalar ? scalar.Value ?? "" : node.ToString();

    private static ManifestException Wrong(YamlNode node, string source, string message) =>
        new($"{source}:{node.Start.Line}: {message}");
}

/// <summary>A workload file that cannot be read: where (file:line) and what is wrong, in one line.</summary>
public sealed class ManifestException(string message) : Exception(message);
