using System.Text.Json;

namespace Platform.AppHost.Hosting;

/// <summary>
/// <c>$PLATFORM_STATE_DIR/apphost.json</c>: the engine's live state for tools and tests, rewritten atomically
/// (write a temporary file, then rename) on every change.
/// </summary>
public sealed class StateFile(string path)
{
    private readonly Lock _lock = new();

    public string Path { get; } = path;

    public void Write(int appHostPid, IEnumerable<ResourceSnapshot> resources)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteNumber("pid", appHostPid);
            json.WriteString("updated", DateTimeOffset.UtcNow);
            json.WriteStartArray("resources");
            foreach (var r in resources)
            {
                json.WriteStartObject();
                json.WriteString("name", r.Name);
                json.WriteString("state", r.State.ToString());
                json.WriteString("health", r.Health.ToString());
                if (r.Pid is { } pid) json.WriteNumber("pid", pid); else json.WriteNull("pid");
                json.WriteNumber("restarts", r.Restarts);
                if (r.ExitCode is { } code) json.WriteNumber("exitCode", code);
                if (r.InstanceId is { } instance) json.WriteString("instanceId", instance);
                json.WriteStartObject("endpoints");
                foreach (var (name, url) in r.Endpoints) json.WriteString(name, url);
                json.WriteEndObject();
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }

        lock (_lock)
        {
            var temp = Path + ".tmp";
            File.WriteAllBytes(temp, buffer.ToArray());
            File.Move(temp, Path, overwrite: true);
        }
    }
}
