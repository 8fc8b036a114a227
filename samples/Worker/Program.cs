using System.Diagnostics;
using System.Runtime.InteropServices;
using OpenTelemetry;
using OpenTelemetry.Trace;

// A sample agent for the platform. Every few hundred milliseconds it does a step of work in a span, as a child of the
// trace its supervisor started it in (TRACEPARENT), and touches its heartbeat file. When the crash file appears it
// removes it and crashes (exit code 3), so a test or a person can make it fail on demand:
//
//   platform-worker --heartbeat /tmp/w.beat --crash-file /tmp/w.crash [--interval-ms 200]
//
// Telemetry goes wherever OTEL_EXPORTER_OTLP_ENDPOINT says (the Launcher passes on the platform's own, with
// OTEL_SERVICE_NAME = the workload and service.instance.id = the instance).
var heartbeat = Option("--heartbeat");
var crashFile = Option("--crash-file");
var interval = TimeSpan.FromMilliseconds(int.TryParse(Option("--interval-ms"), out var ms) ? ms : 200);
foreach (var file in new[] { heartbeat, crashFile })
    if (file is not null && Path.GetDirectoryName(Path.GetFullPath(file)) is { } directory) Directory.CreateDirectory(directory);

using var source = new ActivitySource("Platform.Samples.Worker");
using var tracing = Sdk.CreateTracerProviderBuilder().AddSource(source.Name).AddOtlpExporter().Build();
ActivityContext.TryParse(Environment.GetEnvironmentVariable("TRACEPARENT"), Environment.GetEnvironmentVariable("TRACESTATE"), out var parent);

using var stopping = new CancellationTokenSource();
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    stopping.Cancel();
});
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stopping.Cancel();
};

var generation = Environment.GetEnvironmentVariable("PLATFORM_GENERATION") ?? "?";
using (var started = source.StartActivity("worker.started", ActivityKind.Internal, parent))
{
    started?.SetTag("generation", generation);
    Console.WriteLine($"worker: generation {generation} started (pid {Environment.ProcessId})");
}

var exitCode = 0;
for (var step = 1; !stopping.IsCancellationRequested; step++)
{
    using (var span = source.StartActivity("worker.step", ActivityKind.Internal, parent))
    {
        span?.SetTag("step", step);
        await Task.Delay(TimeSpan.FromMilliseconds(20)); // the work
        if (heartbeat is not null) File.WriteAllText(heartbeat, DateTimeOffset.UtcNow.ToString("O"));
    }

    if (crashFile is not null && File.Exists(crashFile))
    {
        File.Delete(crashFile);
        using (var crash = source.StartActivity("worker.crash", ActivityKind.Internal, parent))
        {
            crash?.SetStatus(ActivityStatusCode.Error, "told to crash");
        }
        Console.Error.WriteLine("worker: told to crash; exiting with code 3");
        exitCode = 3;
        break;
    }

    try { await Task.Delay(interval, stopping.Token); }
    catch (OperationCanceledException) { }
}

tracing.ForceFlush(5000);
return exitCode;

string? Option(string name)
{
    var index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length ? args[index + 1] : null;
}
