using System.Globalization;
using System.Text;
using System.Text.Json;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace Platform.Cli;

public enum Format { Table, Wide, Json, Yaml }

/// <summary>
/// What platformctl prints: aligned columns without borders (as kubectl), coloured on a terminal and plain in a pipe,
/// or the contract's JSON (protobuf's JSON mapping) and the same as YAML. Columns are aligned here rather than with
/// Spectre.Console's Table, which wraps to the terminal's width and to 80 columns in a pipe; Spectre decides whether
/// colour is wanted (a terminal, NO_COLOR, TERM).
/// </summary>
public sealed class Output(TextWriter writer, bool colour)
{
    private static readonly JsonFormatter Json = new(JsonFormatter.Settings.Default.WithIndentation("  "));

    public TextWriter Writer { get; } = writer;

    public bool Colour { get; } = colour;

    public static Output Console() => new(System.Console.Out,
        !System.Console.IsOutputRedirected && Spectre.Console.AnsiConsole.Profile.Capabilities.ColorSystem != Spectre.Console.ColorSystem.NoColors
            && Environment.GetEnvironmentVariable("NO_COLOR") is null or "");

    public static Format ParseFormat(string? text) => text switch
    {
        null or "" => Format.Table,
        "wide" => Format.Wide,
        "json" => Format.Json,
        "yaml" => Format.Yaml,
        _ => throw new CliException(ExitCode.Usage, $"-o {text}: the output formats are json, yaml and wide"),
    };

    /// <summary>A message as JSON or YAML.</summary>
    public void Message(IMessage message, Format format)
    {
        var json = Json.Format(message);
        if (format == Format.Json) Writer.WriteLine(json);
        else Writer.Write(Yaml(json));
    }

    /// <summary>JSON as block YAML (keys in the JSON's order; strings quoted only where YAML needs it).</summary>
    public static string Yaml(string json)
    {
        using var document = JsonDocument.Parse(json);
        var text = new StringWriter(CultureInfo.InvariantCulture);
        var emitter = new Emitter(text);
        emitter.Emit(new StreamStart());
        emitter.Emit(new DocumentStart(null, null, true));
        Emit(emitter, document.RootElement);
        emitter.Emit(new DocumentEnd(true));
        emitter.Emit(new StreamEnd());
        return text.ToString();
    }

    private static void Emit(IEmitter emitter, JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                emitter.Emit(new MappingStart(null, null, true, MappingStyle.Block));
                foreach (var property in element.EnumerateObject())
                {
                    emitter.Emit(new Scalar(property.Name));
                    Emit(emitter, property.Value);
                }
                emitter.Emit(new MappingEnd());
                break;
            case JsonValueKind.Array:
                emitter.Emit(new SequenceStart(null, null, true, SequenceStyle.Block));
                foreach (var item in element.EnumerateArray()) Emit(emitter, item);
                emitter.Emit(new SequenceEnd());
                break;
            case JsonValueKind.String:
                var value = element.GetString()!;
                // A string that would read back as another type (true, 12, null) is quoted.
                var plain = !(bool.TryParse(value, out _) || double.TryParse(value, CultureInfo.InvariantCulture, out _) || value is "" or "null" or "~");
                emitter.Emit(new Scalar(null, null, value, plain ? ScalarStyle.Any : ScalarStyle.DoubleQuoted, plain, !plain));
                break;
            default:
                emitter.Emit(new Scalar(null, null, element.GetRawText(), ScalarStyle.Plain, true, false));
                break;
        }
    }

    /// <summary>Rows under a header, each column as wide as its widest cell, two spaces apart; the last column unpadded.</summary>
    public void Table(IReadOnlyList<string> header, IEnumerable<IReadOnlyList<Cell>> rows)
    {
        var all = new List<IReadOnlyList<Cell>> { header.Select(h => new Cell(h)).ToList() };
        all.AddRange(rows);
        var widths = new int[header.Count];
        foreach (var row in all)
            for (var i = 0; i < row.Count; i++) widths[i] = Math.Max(widths[i], row[i].Text.Length);
        var line = new StringBuilder();
        foreach (var row in all)
        {
            line.Clear();
            for (var i = 0; i < row.Count; i++)
            {
                var cell = row[i];
                var last = i == row.Count - 1;
                var text = last ? cell.Text : cell.Text.PadRight(widths[i]);
                line.Append(Colour && cell.Colour is { } c ? $"\u001b[{c}m{text}\u001b[0m" : text);
                if (!last) line.Append("  ");
            }
            Writer.WriteLine(line.ToString().TrimEnd());
        }
    }

    /// <summary>"key: value" lines, the keys aligned.</summary>
    public void Fields(IEnumerable<(string Key, Cell Value)> fields, int indent = 0)
    {
        var list = fields.ToList();
        var width = list.Count == 0 ? 0 : list.Max(f => f.Key.Length) + 1;
        foreach (var (key, value) in list)
        {
            var text = Colour && value.Colour is { } c ? $"\u001b[{c}m{value.Text}\u001b[0m" : value.Text;
            Writer.WriteLine($"{new string(' ', indent)}{(key + ":").PadRight(width)} {text}".TrimEnd());
        }
    }

    public void Heading(string text) => Writer.WriteLine(Colour ? $"\u001b[1m{text}\u001b[0m" : text);

    /// <summary>How long ago, as kubectl says it: 45s, 3m12s, 5h, 2d.</summary>
    public static string Age(Timestamp? time, DateTimeOffset now)
    {
        if (time is null || (time.Seconds == 0 && time.Nanos == 0)) return "-";
        var age = now - time.ToDateTimeOffset();
        if (age < TimeSpan.Zero) age = TimeSpan.Zero;
        return age.TotalSeconds < 120 ? $"{(int)age.TotalSeconds}s"
            : age.TotalMinutes < 10 ? $"{(int)age.TotalMinutes}m{age.Seconds}s"
            : age.TotalHours < 3 ? $"{(int)age.TotalMinutes}m"
            : age.TotalDays < 2 ? $"{(int)age.TotalHours}h"
            : $"{(int)age.TotalDays}d";
    }

    /// <summary>How long until a time: "in 4s", or "-".</summary>
    public static string In(Timestamp? time, DateTimeOffset now)
    {
        if (time is null || (time.Seconds == 0 && time.Nanos == 0)) return "-";
        var left = time.ToDateTimeOffset() - now;
        return left <= TimeSpan.Zero ? "now" : $"in {(left.TotalSeconds < 120 ? $"{Math.Ceiling(left.TotalSeconds):0}s" : $"{(int)left.TotalMinutes}m")}";
    }

    public static string Bytes(long bytes) => bytes switch
    {
        <= 0 => "-",
        < 1024 * 1024 => $"{bytes / 1024.0:0.#}Ki",
        < 1024L * 1024 * 1024 => $"{bytes / (1024.0 * 1024):0.#}Mi",
        _ => $"{bytes / (1024.0 * 1024 * 1024):0.##}Gi",
    };

    /// <summary>An enum value as the contract names it (BACKING_OFF), from its descriptor.</summary>
    public static string Name(Google.Protobuf.Reflection.EnumDescriptor type, int value) =>
        type.FindValueByNumber(value)?.Name ?? value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>One cell; Colour is an ANSI SGR code (32 green, 33 yellow, 31 red, 90 grey), used on a terminal only.</summary>
public sealed record Cell(string Text, string? Colour = null)
{
    public static implicit operator Cell(string text) => new(text);
}
