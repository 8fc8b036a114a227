using CsCheck;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Platform.Testing.HostileInput;

/// <summary>
/// Random and boundary protobuf messages of any type, from its descriptor: empty, huge and unicode strings, NUL and
/// path tricks, integer extremes, NaN and infinities, unknown enum values, negative and enormous durations, long lists,
/// big maps, nesting up to a depth, and, on the wire, an unknown field appended.
/// </summary>
public static class RandomMessages
{
    private static readonly string[] Strings =
    [
        "", " ", "a", "sleeper", "名前🙂", "\0", "../../etc/passwd", "/bin/true", "-1", "UPPER_case.dots",
        new string('x', 70_000), string.Concat(Enumerable.Repeat("🙂", 5_000)), "agent-1", "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ];

    private static readonly long[] Longs = [0, 1, -1, int.MaxValue, int.MinValue, long.MaxValue, long.MinValue, 1000, -1000, 315_576_000_001];

    private static readonly double[] Doubles = [0, -1, double.NaN, double.PositiveInfinity, double.NegativeInfinity, 1e308, 0.5];

    /// <summary>Serialized messages of <paramref name="descriptor"/>'s type.</summary>
    public static Gen<byte[]> Of(MessageDescriptor descriptor) =>
        Gen.Select(Message(descriptor, 0), Gen.Bool, (message, unknown) =>
        {
            var bytes = message.ToByteArray();
            // Field 999 (varint 1): a field from a newer client, which the service must ignore.
            return unknown ? [.. bytes, 0xB8, 0x3E, 0x01] : bytes;
        });

    /// <summary>A message drawn from one seed (CsCheck prints the case, and its seed replays it).</summary>
    private static Gen<IMessage> Message(MessageDescriptor descriptor, int depth) =>
        Gen.Int[0, int.MaxValue].Select(seed => Build(descriptor, depth, new Random(seed)));

    private static IMessage Build(MessageDescriptor descriptor, int depth, Random random)
    {
        var message = descriptor.Parser.ParseFrom(ByteString.Empty);
        foreach (var field in descriptor.Fields.InFieldNumberOrder())
        {
            if (random.Next(3) == 0 || depth > 3) continue; // left unset
            if (field.IsMap)
            {
                var map = (System.Collections.IDictionary)field.Accessor.GetValue(message);
                var entry = field.MessageType;
                var count = random.Next(8) == 0 ? 100 : random.Next(4);
                for (var i = 0; i < count; i++)
                {
                    var key = Value(entry.FindFieldByNumber(1), depth + 1, random);
                    var value = Value(entry.FindFieldByNumber(2), depth + 1, random);
                    if (key is not null && value is not null) map[key] = value;
                }
            }
            else if (field.IsRepeated)
            {
                var list = (System.Collections.IList)field.Accessor.GetValue(message);
                var count = random.Next(8) == 0 ? 200 : random.Next(4);
                for (var i = 0; i < count; i++)
                    if (Value(field, depth + 1, random) is { } value) list.Add(value);
            }
            else if (Value(field, depth + 1, random) is { } value)
            {
                field.Accessor.SetValue(message, value);
            }
        }
        return message;
    }

    private static object? Value(FieldDescriptor field, int depth, Random random)
    {
        T Pick<T>(T[] values) => values[random.Next(values.Length)];
        return field.FieldType switch
        {
            FieldType.String => Pick(Strings),
            FieldType.Bytes => ByteString.CopyFrom(new byte[random.Next(3) == 0 ? 0 : random.Next(1, 64)]),
            FieldType.Bool => random.Next(2) == 0,
            FieldType.Double => Pick(Doubles),
            FieldType.Float => (float)Pick(Doubles),
            FieldType.Int32 or FieldType.SInt32 or FieldType.SFixed32 => unchecked((int)Pick(Longs)),
            FieldType.Int64 or FieldType.SInt64 or FieldType.SFixed64 => Pick(Longs),
            FieldType.UInt32 or FieldType.Fixed32 => unchecked((uint)Pick(Longs)),
            FieldType.UInt64 or FieldType.Fixed64 => unchecked((ulong)Pick(Longs)),
            // Known values, and ones no version of the contract has.
            FieldType.Enum => Enum.ToObject(field.EnumType.ClrType, random.Next(3) == 0 ? random.Next(-3, 100) : field.EnumType.Values[random.Next(field.EnumType.Values.Count)].Number),
            FieldType.Message when depth <= 3 => Build(field.MessageType, depth, random),
            _ => null,
        };
    }
}
