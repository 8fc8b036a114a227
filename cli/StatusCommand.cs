using System.Text.Json;
using Grpc.Core;
using Grpc.Health.V1;

namespace Platform.Cli;

/// <summary>status: each service's health (grpc.health.v1), and from its /health, when known, every check not healthy.</summary>
public static class StatusCommand
{
    private sealed record ServiceHealth(string Service, string Address, string Health, string Detail);

    public static async Task<int> RunAsync(Context c)
    {
        var results = await Task.WhenAll(Connection.Services.Select(s => CheckAsync(c, s)));
        if (c.Format is Format.Json or Format.Yaml)
        {
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
            {
                json.WriteStartObject();
                json.WriteString("source", c.Platform.Source);
                json.WriteStartArray("services");
                foreach (var r in results)
                {
                    json.WriteStartObject();
                    json.WriteString("service", r.Service);
                    json.WriteString("address", r.Address);
                    json.WriteString("health", r.Health);
                    json.WriteString("detail", r.Detail);
                    json.WriteEndObject();
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
            var text = System.Text.Encoding.UTF8.GetString(buffer.ToArray());
            if (c.Format == Format.Json) c.Out.Writer.WriteLine(text);
            else c.Out.Writer.Write(Output.Yaml(text));
        }
        else
        {
            c.Out.Writer.WriteLine($"platform: {c.Platform.Source}");
            c.Out.Table(["SERVICE", "ADDRESS", "HEALTH", "DETAIL"], results.Select(r => (IReadOnlyList<Cell>)
                [r.Service, r.Address, new Cell(r.Health, r.Health switch { "SERVING" => "32", "UNREACHABLE" or "NOT_SERVING" => "31", _ => "33" }), r.Detail]));
        }
        if (results.All(r => r.Health == "UNREACHABLE")) return ExitCode.Unreachable;
        return results.All(r => r.Health == "SERVING") ? ExitCode.Ok : ExitCode.Failed;
    }

    private static async Task<ServiceHealth> CheckAsync(Context c, string service)
    {
        string address;
        try { address = c.Platform.Address(service); }
        catch (CliException e) { return new(service, "-", "UNKNOWN", e.Message); }
        string health;
        string detail = "";
        try
        {
            var reply = await new Health.HealthClient(c.Platform.Channel(service)).CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: c.Cancellation);
            health = Output.Name(HealthCheckResponse.Descriptor.FindDescriptor<Google.Protobuf.Reflection.EnumDescriptor>("ServingStatus"), (int)reply.Status);
        }
        catch (RpcException e)
        {
            var (code, message) = Failures.Describe(e, service, c.Platform);
            return new(service, address, code == ExitCode.Unreachable ? "UNREACHABLE" : "UNKNOWN", message);
        }
        if (c.Platform.Http.TryGetValue(service, out var http)) detail = await DegradedAsync(http, c.Cancellation);
        return new(service, address, health, detail);
    }

    /// <summary>The checks of /health that are not Healthy, as "name: status (description)"; empty when all are.</summary>
    private static async Task<string> DegradedAsync(string http, CancellationToken cancellation)
    {
        try
        {
            using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            using var response = await client.GetAsync(new Uri(new Uri(http), "/health"), cancellation);
            using var json = await JsonDocument.ParseAsync(await response.Content.ReadAsStreamAsync(cancellation), cancellationToken: cancellation);
            var bad = json.RootElement.GetProperty("entries").EnumerateObject()
                .Where(e => e.Value.GetProperty("status").GetString() != "Healthy")
                .Select(e => $"{e.Name}: {e.Value.GetProperty("status").GetString()}" +
                    (e.Value.TryGetProperty("description", out var d) ? $" ({d.GetString()})" : e.Value.TryGetProperty("error", out var x) ? $" ({x.GetString()})" : ""));
            return string.Join("; ", bad);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return $"/health: {e.Message}";
        }
    }
}
