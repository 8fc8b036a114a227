using System.Text.Json;
using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Platform.AppHost;

/// <summary>
/// Writes apphost.json: the AppHost's pid, the dashboard's URL, and per platform resource its state, health, pid,
/// restarts and endpoints, from <see cref="ResourceNotificationService"/>. Written to a temporary file, then renamed.
/// </summary>
internal sealed class StateFileWriter(
    PlatformState state,
    DistributedApplicationModel model,
    ResourceNotificationService notifications,
    IConfiguration configuration,
    ILogger<StateFileWriter> logger) : BackgroundService
{
    private const string DashboardResource = "aspire-dashboard";
    private readonly Dictionary<string, CustomResourceSnapshot> _latest = new(StringComparer.Ordinal);
    private int? _dashboardPid;
    private string? _dashboardUrl;

    private static int? Pid(CustomResourceSnapshot? s) =>
        s?.State?.Text == KnownResourceStates.Running &&
        s.Properties.FirstOrDefault(p => p.Name == "executable.pid")?.Value is { } value &&
        int.TryParse(value.ToString(), out var pid) ? pid : null;

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
                    _dashboardPid = Pid(change.Snapshot);
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

    private void Write(List<string> names)
    {
        try
        {
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
            {
                json.WriteStartObject();
                json.WriteNumber("pid", Environment.ProcessId);
                json.WriteString("updated", DateTimeOffset.UtcNow);
                if ((_dashboardUrl ?? DashboardUrl()) is { } dashboard) json.WriteString("dashboard", dashboard);
                if (_dashboardPid is { } dashboardPid) json.WriteNumber("dashboardPid", dashboardPid);
                json.WriteStartArray("resources");
                foreach (var name in names) WriteResource(json, name, _latest.GetValueOrDefault(name));
                json.WriteEndArray();
                json.WriteEndObject();
            }
            var temp = state.StateFile + ".tmp";
            File.WriteAllBytes(temp, buffer.ToArray());
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
        if (Pid(s) is { } pid) json.WriteNumber("pid", pid);
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

    private string? DashboardUrl()
    {
        var urls = configuration["ASPNETCORE_URLS"];
        if (string.IsNullOrEmpty(urls)) return null;
        var url = urls.Split(';')[0];
        return configuration["AppHost:BrowserToken"] is { Length: > 0 } token ? $"{url}/login?t={token}" : url;
    }
}
