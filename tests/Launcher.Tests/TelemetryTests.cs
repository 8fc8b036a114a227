using Microsoft.Extensions.Configuration;
using Platform.Launcher.V1;
using Platform.Testing;

namespace Platform.Launcher.Tests;

/// <summary>The launcher passes its OpenTelemetry exporter settings on, so an instrumented agent shows up beside it.</summary>
public sealed class TelemetryTests : LauncherTestBase
{
    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        // As the AppHost gives them (read at each launch); nothing listens there, which only the exporter notices.
        var configuration = (IConfigurationRoot)Host.Services.GetService(typeof(IConfiguration))!;
        configuration["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4317";
        configuration["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc";
    }

    [Fact]
    public async Task A_launched_process_exports_where_the_launcher_does_as_its_workload_and_instance()
    {
        var instance = await Client.LaunchAsync(new LaunchRequest { Process = new ProcessSpec { Executable = "sleep", Args = { "300" } }, Workload = "agent" });

        var environ = await ProcessEnvironment.ReadAsync(instance.Pid);

        Assert.Contains("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317", environ);
        Assert.Contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc", environ);
        Assert.Contains("OTEL_SERVICE_NAME=agent", environ);
        Assert.Contains($"OTEL_RESOURCE_ATTRIBUTES=service.instance.id={instance.Id}", environ);
    }

    [Fact]
    public async Task What_the_launch_request_sets_itself_wins()
    {
        var instance = await Client.LaunchAsync(new LaunchRequest
        {
            Process = new ProcessSpec { Executable = "sleep", Args = { "300" }, Env = { ["OTEL_SERVICE_NAME"] = "mine", ["OTEL_RESOURCE_ATTRIBUTES"] = "team=a" } },
            Workload = "agent",
        });

        var environ = await ProcessEnvironment.ReadAsync(instance.Pid);

        Assert.Contains("OTEL_SERVICE_NAME=mine", environ);
        Assert.Contains($"OTEL_RESOURCE_ATTRIBUTES=service.instance.id={instance.Id},team=a", environ);
    }
}
