using System.Text.Json;
using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Platform.AppHost;

/// <summary>
/// Writes apphost.json (mode 0600): the AppHost's pid, the dashboard's URL, the run's bearer token, and per platform resource its state, health, pid,
/// restarts and endpoints, from <see cref="ResourceNotificationService"/>. Written to a temporary file, then renamed.
/// </summary>
internal sealed class StateFileWriter(
    PlatformState state,
    DistributedApplicationModel model,
    ResourceNotificationService notifications,
    ILogger<StateFileWriter> logger) : BackgroundService
{
    private const string DashboardResource = "aspire-dashboard";
    private readonly Dictionary<string, CustomResourceSnapshot> _latest = new(StringComparer.Ordinal);
    private int? _dashboardPid;
    private string? _dashboardUrl;
    private byte[]? _written;


    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // The platform's own resources: not the dashboard (its URL and pid are written apart) nor hidden helpers.
        var names = model.Resources.Where(r => r is ProjectResource or ExecutableResource && r.Name != DashboardResource
                && !r.Name.EndsWith("-rebuilder", StringComparison.Ordinal))
            .Select(r => r.Name).ToList();
        Write(names);
        try
        {
            await foreach (var change in notifications.WatchAsync(stoppingToken))
            {
                if (change.Resource.Name == DashboardResource)
                {
                    _dashboardPid = ResourceSnapshots.Pid(change.Snapshot);
                    // Its own URL (ports may be randomised), with the login token when there is one.
                    _dashboardUrl = change.Snapshot.Urls.FirstOrDefault(u => !u.IsInternal && u.Url.StartsWith("http", StringComparison.Ordinal) && u.Name is "http" or "https")?.Url ?? _dashboardUrl;
                    Write(names);
                    continue;
                }
                if (!names.Contains(change.Resource.Name)) continue;
                _latest[change.Resource.Name] = change.Snapshot;
                Write(names);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        try { File.Delete(state.StateFile); } catch (IOException) { }
    }

    /// <summary>Rewrites the file when what it says changed (most notifications change nothing written here).</summary>
    private void Write(List<string> names)
    {
        try
        {
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
            {
                json.WriteStartObject();
                json.WriteNumber("pid", Environment.ProcessId);
                if (_dashboardUrl is { } dashboard) json.WriteString("dashboard", dashboard);
                if (_dashboardPid is { } dashboardPid) json.WriteNumber("dashboardPid", dashboardPid);
                json.WriteString("token", state.Token); // the file is the owner's only (0600)
                json.WriteStartArray("resources");
                foreach (var name in names) WriteResource(json, name, _latest.GetValueOrDefault(name));
                json.WriteEndArray();
                json.Flush();
                var content = buffer.ToArray();
                if (_written is not null && content.AsSpan().SequenceEqual(_written)) return;
                _written = content;
                json.WriteString("updated", DateTimeOffset.UtcNow);
                json.WriteEndObject();
            }
            var temp = state.StateFile + ".tmp";
            File.Delete(temp); // a left-over file would keep its mode
            // Created anew each time, readable and writable by the owner only: it holds the run's token.
            using (var file = new FileStream(temp, new FileStreamOptions
            {
                Mode = FileMode.Create,
                Access = FileAccess.Write,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            }))
                file.Write(buffer.ToArray());
            File.Move(temp, state.StateFile, overwrite: true);
        }
        catch (IOException e)
        {
            logger.LogWarning("Could not write {StateFile}: {Error}", state.StateFile, e.Message);
        }
    }

    private static void WriteResource(Utf8JsonWriter json, string name, CustomResourceSnapshot? s)
    {
        json.WriteStartObject();
        json.WriteString("name", name);
        json.WriteString("state", s?.State?.Text ?? KnownResourceStates.NotStarted);
        json.WriteString("health", s?.HealthStatus?.ToString() ?? "Unknown");
        if (ResourceSnapshots.Pid(s) is { } pid) json.WriteNumber("pid", pid);
        else json.WriteNull("pid");
        var restarts = s?.Properties.FirstOrDefault(p => p.Name == RestartPolicyService.RestartsProperty)?.Value;
        json.WriteNumber("restarts", restarts is int count ? count : 0);
        if (s?.ExitCode is { } exit) json.WriteNumber("exitCode", exit);
        if (s?.Properties.FirstOrDefault(p => p.Name == RestartPolicyService.ReasonProperty)?.Value is { } reason) json.WriteString("reason", reason.ToString());
        json.WriteStartObject("endpoints");
        var written = new HashSet<string>(StringComparer.Ordinal);
        foreach (var url in s?.Urls.Where(u => !u.IsInternal && u.Name is not null) ?? [])
        {
            if (written.Add(url.Name!)) json.WriteString(url.Name!, url.Url.TrimEnd('/'));
        }
        json.WriteEndObject();
        json.WriteEndObject();
    }
}
