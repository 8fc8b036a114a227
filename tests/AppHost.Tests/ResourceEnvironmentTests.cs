using Platform.AppHost.Hosting;

namespace Platform.AppHost.Tests;

public class ResourceEnvironmentTests
{
    [Fact]
    public void A_project_gets_its_endpoints_its_references_and_the_Aspire_telemetry_settings()
    {
        var builder = DistributedApplication.CreateBuilder([]);
        var registry = builder.AddProject("registry", "Platform.SessionRegistry");
        var launcher = builder.AddProject("launcher", "Platform.Launcher").WithReference(registry).WithEnvironment("EXTRA", "1");
        var model = builder.Build().Model;
        var ports = new Dictionary<(string, string), int>
        {
            [("registry", "grpc")] = 1001, [("registry", "http")] = 1002,
            [("launcher", "grpc")] = 2001, [("launcher", "http")] = 2002,
        };

        var env = ResourceEnvironment.Build(launcher.Resource, model, ports, "/state", "abc123", 42);

        Assert.Equal("http://127.0.0.1:2001", env["Kestrel__Endpoints__grpc__Url"]);
        Assert.Equal("Http2", env["Kestrel__Endpoints__grpc__Protocols"]);
        Assert.Equal("http://127.0.0.1:2002", env["Kestrel__Endpoints__http__Url"]);
        Assert.Equal("Http1", env["Kestrel__Endpoints__http__Protocols"]);
        Assert.Equal("http://127.0.0.1:1001", env["services__registry__grpc__0"]);
        Assert.Equal("http://127.0.0.1:1002", env["services__registry__http__0"]);
        Assert.DoesNotContain(env.Keys, k => k.StartsWith("services__launcher", StringComparison.Ordinal));
        Assert.Equal("launcher", env["OTEL_SERVICE_NAME"]);
        Assert.Equal("service.instance.id=abc123", env["OTEL_RESOURCE_ATTRIBUTES"]);
        Assert.Equal("true", env["OTEL_DOTNET_EXPERIMENTAL_ASPNETCORE_ENABLE_GRPC_INSTRUMENTATION"]);
        Assert.Equal("/state/launcher", env["PLATFORM_DATA_DIR"]);
        Assert.Equal("42", env["PLATFORM_PARENT_PID"]);
        Assert.Equal("1", env["EXTRA"]);
    }

    [Fact]
    public void The_backoff_doubles_from_one_second_to_its_cap()
    {
        var policy = AppHostOptions.DefaultRestarts;

        var delays = Enumerable.Range(1, 8).Select(n => policy.BackoffAfter(n).TotalSeconds).ToList();

        Assert.Equal([1, 2, 4, 8, 16, 30, 30, 30], delays);
    }

    [Fact]
    public void The_backoff_resets_only_after_a_stable_run()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        var tracker = new Platform.Restarts.RestartTracker(AppHostOptions.DefaultRestarts, time);
        TimeSpan Crash(TimeSpan after)
        {
            tracker.Started();
            time.Advance(after);
            tracker.Exited(failed: true);
            var delay = tracker.NextStartAt!.Value - time.GetUtcNow();
            time.Advance(delay);
            return delay;
        }

        Assert.Equal([1, 2, 4, 8], Enumerable.Range(0, 4).Select(_ => Crash(TimeSpan.FromSeconds(29)).TotalSeconds));
        Assert.Equal(1, Crash(TimeSpan.FromSeconds(30)).TotalSeconds);
    }

    [Theory]
    [InlineData("{\"status\":\"Healthy\"}", ResourceHealth.Healthy)]
    [InlineData("{\"status\":\"Degraded\",\"entries\":{}}", ResourceHealth.Degraded)]
    [InlineData("Healthy", ResourceHealth.Healthy)]
    public void Health_reports_are_read_from_their_status(string body, ResourceHealth expected)
    {
        Assert.Equal(expected, Orchestrator.ReadHealthStatus(body));
    }
}
