using System.Text.Json;
using Grpc.Net.Client;
using Platform.Supervisor.V1;
using Platform.Testing;

namespace Platform.EndToEnd.Tests;

/// <summary>
/// A workload's trace across its restarts and a restart of the Supervisor, read back from the Aspire dashboard's
/// telemetry API: the instrumented sample agent (samples/Worker) under the real AppHost.
/// </summary>
[Collection(AppHostCollection.Name)]
public sealed class TraceTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = PlatformAppTests.Timeout;
    private readonly string _stateDirectory = Directory.CreateTempSubdirectory("platform-e2e-").FullName;
    private readonly string _work = Directory.CreateTempSubdirectory("platform-worker-").FullName;
    private string _token = "";
    private AppHostProcess _appHost = null!;

    public Task InitializeAsync()
    {
        _appHost = AppHostProcess.Start(AppHostProcess.ProjectOutput(typeof(TraceTests).Assembly, "Platform.AppHost"), _stateDirectory);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Every_start_of_a_workload_is_in_one_trace_in_the_dashboard_linked_to_the_one_before_with_the_agents_spans_under_it()
    {
        var state = await _appHost.WaitForAllServingAsync(Timeout);
        var worker = Path.ChangeExtension(AppHostProcess.ProjectOutput(typeof(TraceTests).Assembly, "platform-worker"), null);
        var crash = Path.Combine(_work, "crash");
        var supervisorUrl = state["supervisor"].GrpcUrl;
        _token = state.Token;

        using (var channel = PlatformChannel.Create(supervisorUrl, _token))
        {
            await new Supervisor.V1.Supervisor.SupervisorClient(channel).ApplyWorkloadAsync(new ApplyWorkloadRequest
            {
                Workload = new Workload
                {
                    Name = "traced",
                    Launch = new Launcher.V1.LaunchSpec { Process = new Launcher.V1.ProcessSpec { Executable = worker, Args = { "--heartbeat", Path.Combine(_work, "beat"), "--crash-file", crash } } },
                    // No backoff: the launcher restarts it at once (armed successors), the path whose spans are hardest to keep.
                    RestartPolicy = new RestartPolicy { InitialBackoff = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.Zero) },
                },
            });
        }

        var traceId = (await GenerationAsync(supervisorUrl, 1)).Status.TraceId;
        await CrashAsync(crash, supervisorUrl, 2);
        await CrashAsync(crash, supervisorUrl, 3);

        // The Supervisor SIGKILLed: the AppHost's restart policy brings it back, and it carries on in the same trace.
        // Killed once what it did so far is exported: generation 4 armed (its start span made) and every span's parent
        // in the dashboard. A SIGKILL loses the spans a process has not exported yet (OTEL_BSP_SCHEDULE_DELAY=1000);
        // those would be children's parents that never arrive, which this test would rightly call broken.
        using var http = new HttpClient { BaseAddress = new Uri(new Uri(state.Dashboard!).GetLeftPart(UriPartial.Authority)) };
        await Eventually.ValueAsync(async () => await SpansAsync(http, traceId),
            s => s.Any(x => x.Name == "supervisor.start traced" && x.Attributes.GetValueOrDefault("attempt") == "4") && Closed(s),
            Timeout, "generation 4 armed and the supervisor's spans so far in the dashboard");
        await Task.Delay(TimeSpan.FromSeconds(2)); // anything made since is exported too (one more export interval)
        AppHostProcess.Signal(state["supervisor"].Pid!.Value, AppHostProcess.SIGKILL);
        state = await _appHost.WaitForStateAsync(s => s["supervisor"].Restarts == 1 && s["supervisor"].IsUp, Timeout);
        await CrashAsync(crash, state["supervisor"].GrpcUrl, 4);
        Assert.Equal(traceId, (await GenerationAsync(state["supervisor"].GrpcUrl, 4)).Status.TraceId);

        // Read back from the dashboard: four start spans, attempts 1-4, each linked to the one before, and the agent's
        // own spans children of its generation's start span. No span names a parent that was never exported.
        var spans = await Eventually.ValueAsync(async () => await SpansAsync(http, traceId),
            s => s.Count(x => x.Name == "supervisor.start traced") >= 4 && s.Count(x => x.Name == "worker.started") >= 4,
            Timeout, "the dashboard to have every start span and the agent's spans");

        var starts = spans.Where(s => s.Name == "supervisor.start traced").ToList();
        var byAttempt = starts.GroupBy(s => s.Attributes["attempt"]).ToDictionary(g => long.Parse(g.Key), g => g.ToList());
        Assert.Equal([1L, 2L, 3L, 4L], byAttempt.Keys.Where(k => k <= 4).Order());
        var byId = spans.ToDictionary(s => s.SpanId);
        foreach (var span in spans.Where(s => s.ParentSpanId.Length > 0))
            Assert.True(byId.ContainsKey(span.ParentSpanId), $"{span.Name} names parent {span.ParentSpanId}, which the dashboard never received");
        foreach (var attempt in new long[] { 2, 3, 4 })
        {
            var linked = byAttempt[attempt].Where(s => s.Links.Count > 0).ToList();
            Assert.NotEmpty(linked);
            Assert.All(linked, s => Assert.Contains(byId[s.Links[0]].Attributes["attempt"], byAttempt.Keys.Where(k => k < attempt).Select(k => k.ToString())));
            Assert.All(byAttempt[attempt], s => Assert.True(s.Attributes.ContainsKey("reason"), "a start span without its reason"));
        }
        // Under its start span directly (an armed successor) or through the Launch call that started it.
        Span StartOf(Span span)
        {
            while (span.Name != "supervisor.start traced") span = byId[span.ParentSpanId];
            return span;
        }
        var agentStarts = spans.Where(s => s.Name == "worker.started").ToList();
        Assert.Equal(["1", "2", "3", "4"], agentStarts.Select(s => StartOf(s).Attributes["attempt"]).Distinct().Order());
        Assert.All(agentStarts, s => Assert.Equal(s.Attributes["generation"], StartOf(s).Attributes["attempt"]));
        Assert.Contains(spans, s => s.Name == "worker.step" && s.ServiceName == "traced");
    }

    private async Task CrashAsync(string crashFile, string supervisorUrl, long next)
    {
        await File.WriteAllTextAsync(crashFile, "crash");
        await GenerationAsync(supervisorUrl, next);
    }

    private async Task<Workload> GenerationAsync(string supervisorUrl, long generation)
    {
        using var channel = PlatformChannel.Create(supervisorUrl, _token);
        var client = new Supervisor.V1.Supervisor.SupervisorClient(channel);
        return await Eventually.ValueAsync(async () =>
            {
                try { return await client.GetWorkloadAsync(new GetWorkloadRequest { Name = "traced" }); }
                catch (Grpc.Core.RpcException) { return new Workload(); }
            },
            w => w.Status?.Generation == generation && w.Status.Phase == WorkloadStatus.Types.Phase.Running, Timeout, $"generation {generation} running");
    }

    /// <summary>Whether every span's parent is among the spans.</summary>
    private static bool Closed(List<Span> spans)
    {
        var ids = spans.Select(s => s.SpanId).ToHashSet();
        return spans.All(s => s.ParentSpanId.Length == 0 || ids.Contains(s.ParentSpanId));
    }

    private sealed record Span(string Name, string SpanId, string ParentSpanId, string ServiceName, Dictionary<string, string> Attributes, List<string> Links);

    /// <summary>The spans of one trace from the dashboard's telemetry API (OTLP JSON).</summary>
    private static async Task<List<Span>> SpansAsync(HttpClient http, string traceId)
    {
        using var response = await http.GetAsync($"/api/telemetry/spans?traceId={traceId}&limit=1000");
        if (!response.IsSuccessStatusCode) return [];
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var result = new List<Span>();
        if (!json.RootElement.TryGetProperty("data", out var data) || !data.TryGetProperty("resourceSpans", out var resourceSpans)) return result;
        foreach (var resource in resourceSpans.EnumerateArray())
        {
            var service = resource.TryGetProperty("resource", out var r) ? Attributes(r).GetValueOrDefault("service.name", "") : "";
            foreach (var scope in resource.GetProperty("scopeSpans").EnumerateArray())
            foreach (var span in scope.GetProperty("spans").EnumerateArray())
            {
                var links = span.TryGetProperty("links", out var l) ? l.EnumerateArray().Select(x => x.GetProperty("spanId").GetString()!).ToList() : [];
                result.Add(new Span(span.GetProperty("name").GetString()!, span.GetProperty("spanId").GetString()!,
                    span.TryGetProperty("parentSpanId", out var p) ? p.GetString() ?? "" : "", service, Attributes(span), links));
            }
        }
        return result;
    }

    private static Dictionary<string, string> Attributes(JsonElement element)
    {
        var result = new Dictionary<string, string>();
        if (!element.TryGetProperty("attributes", out var attributes)) return result;
        foreach (var a in attributes.EnumerateArray())
        {
            var value = a.GetProperty("value");
            var text = value.EnumerateObject().FirstOrDefault().Value;
            result[a.GetProperty("key").GetString()!] = text.ValueKind == JsonValueKind.String ? text.GetString()! : text.ToString();
        }
        return result;
    }

    public async Task DisposeAsync()
    {
        await _appHost.DisposeAsync();
        try { Directory.Delete(_stateDirectory, recursive: true); } catch (IOException) { }
        try { Directory.Delete(_work, recursive: true); } catch (IOException) { }
    }
}
