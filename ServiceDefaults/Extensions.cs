using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using Grpc.Net.Client.Configuration;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;
using Platform.ServiceDefaults;

namespace Microsoft.Extensions.Hosting;

/// <summary>
/// The defaults every platform service shares, in the shape of .NET Aspire's ServiceDefaults:
/// OpenTelemetry, health (/health, /alive and grpc.health.v1), service discovery, gRPC server plumbing and
/// resilient outgoing clients.
/// </summary>
public static class Extensions
{
    /// <summary>Health checks with this tag make up <c>/alive</c>; every check makes up <c>/health</c>.</summary>
    public const string LiveTag = "live";

    /// <summary>The tag of the checks <see cref="AddPlatformDependency"/> adds.</summary>
    public const string DependencyTag = "dependency";

    public const string HealthPath = "/health";
    public const string AlivePath = "/alive";

    public static TBuilder AddServiceDefaults<TBuilder>(this TBuilder builder) where TBuilder : IHostApplicationBuilder
    {
        builder.ConfigureOpenTelemetry();
        builder.AddDefaultHealthChecks();

        builder.Services.AddServiceDiscovery();
        // Service discovery for every outgoing client. The standard resilience handler is not added here: its
        // attempt timeout would cut long-lived gRPC streams (docs/architecture.md §6); plain HTTP clients opt in with
        // AddPlatformHttpClient, gRPC clients get retries from their service config (AddPlatformGrpcClient).
        // Without HttpClientFactory's request logging: its handlers open a logging scope per call (a cost on every gRPC
        // call between the services), and the lines they write are Information, which the services' configuration
        // silences anyway ("System.Net.Http.HttpClient": "Warning").
        builder.Services.ConfigureHttpClientDefaults(http => http.AddServiceDiscovery().RemoveAllLoggers());

        builder.Services.AddSingleton<PlatformTokens>();
        builder.Services.AddSingleton<WatcherLimit>();
        builder.Services.AddSingleton<AuthenticationInterceptor>(); // one instance: it warns once when authentication is off
        builder.Services.AddGrpc(options =>
        {
            options.Interceptors.Add<AuthenticationInterceptor>(); // first: nothing runs for a call that is refused
            options.Interceptors.Add<ErrorInterceptor>();
            options.Interceptors.Add<StreamShutdownInterceptor>();
            options.EnableDetailedErrors = builder.Environment.IsDevelopment();
            options.MaxReceiveMessageSize = 4 * 1024 * 1024;
        });
        // HTTP/2 streams one connection may have open at once (Kestrel's default, made explicit and configurable): a
        // client over it waits for a stream to end; watchers and launches have limits of their own per service.
        var streams = builder.Configuration.GetValue("Platform:MaxStreamsPerConnection", 100);
        builder.Services.Configure<KestrelServerOptions>(kestrel => kestrel.Limits.Http2.MaxStreamsPerConnection = streams);
        builder.Services.AddGrpcReflection();
        // grpc.health.v1 (the overall service, "") runs every check but the dependencies': theirs are at worst Degraded,
        // which is SERVING, so they never change the answer, and each would make a health call of its own to another
        // service on every probe (the AppHost, DCP and Kubernetes probe while a service starts). /health keeps them.
        builder.Services.AddGrpcHealthChecks(options =>
        {
            options.Services.Clear();
            options.Services.Map("", check => !check.Tags.Contains(DependencyTag));
        });

        builder.Services.AddHostedService<ParentProcessWatcher>();
        builder.Services.AddHostedService<IdleMemoryTrimmer>();
        builder.Services.AddSingleton(TimeProvider.System);
        return builder;
    }

    public static TBuilder ConfigureOpenTelemetry<TBuilder>(this TBuilder builder) where TBuilder : IHostApplicationBuilder
    {
        builder.Logging.AddOpenTelemetry(logging =>
        {
            logging.IncludeFormattedMessage = true;
            logging.IncludeScopes = true;
        });

        builder.Services.AddOpenTelemetry()
            .WithMetrics(metrics => metrics
                .AddAspNetCoreInstrumentation()
                .AddHttpClientInstrumentation()
                .AddRuntimeInstrumentation()
                .AddMeter("Platform.*"))
            .WithTracing(tracing => tracing
                .AddSource(builder.Environment.ApplicationName, "Platform.*")
                .AddAspNetCoreInstrumentation(o => o.Filter = context =>
                    !context.Request.Path.StartsWithSegments(HealthPath) &&
                    !context.Request.Path.StartsWithSegments(AlivePath) &&
                    !context.Request.Path.StartsWithSegments("/grpc.health.v1.Health"))
                .AddGrpcClientInstrumentation()
                .AddHttpClientInstrumentation());

        // The OTLP exporter is on only where a collector is configured (Aspire's convention).
        if (!string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
        {
            builder.Services.AddOpenTelemetry().UseOtlpExporter();
        }

        return builder;
    }

    public static TBuilder AddDefaultHealthChecks<TBuilder>(this TBuilder builder) where TBuilder : IHostApplicationBuilder
    {
        builder.Services.AddHealthChecks()
            .AddCheck("self", () => HealthCheckResult.Healthy("the process is serving"), [LiveTag]);
        return builder;
    }

    /// <summary>
    /// Adds a typed gRPC client for a platform service found by service discovery under <paramref name="serviceName"/>
    /// (the AppHost's <c>services__{name}__grpc__0</c>), with a deadline-friendly retry policy: UNAVAILABLE is retried
    /// a few times with backoff. Every mutating platform RPC carries a request_id, so a retry cannot act twice.
    /// </summary>
    public static IHttpClientBuilder AddPlatformGrpcClient<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TClient>(this IServiceCollection services, string serviceName)
        where TClient : class
    {
        services.TryAddSingleton<PlatformTokens>();
        return services.AddGrpcClient<TClient>(options => options.Address = PlatformGrpcAddress(serviceName))
            .ConfigureChannel(channel => channel.ServiceConfig = new ServiceConfig { MethodConfigs = { DefaultRetry } })
            .AddHttpMessageHandler(sp => new BearerTokenHandler(sp.GetRequiredService<PlatformTokens>()));
    }

    /// <summary>
    /// Declares a platform service this one depends on: its health shows up as an entry
    /// <c>dependency:{name}</c> of <c>/health</c> (Degraded while it is down).
    /// </summary>
    public static IHealthChecksBuilder AddPlatformDependency(this IHealthChecksBuilder checks, string serviceName)
    {
        checks.Services.AddGrpcClient<Grpc.Health.V1.Health.HealthClient>(
            DependencyHealthCheck.ClientName(serviceName),
            options => options.Address = PlatformGrpcAddress(serviceName));
        return checks.Add(new HealthCheckRegistration(
            $"dependency:{serviceName}",
            services => new DependencyHealthCheck(services.GetRequiredService<Grpc.Net.ClientFactory.GrpcClientFactory>(), serviceName),
            failureStatus: HealthStatus.Degraded,
            tags: [DependencyTag]));
    }

    /// <summary>A plain HTTP client with service discovery and the standard resilience handler.</summary>
    public static IHttpClientBuilder AddPlatformHttpClient(this IServiceCollection services, string name)
    {
        var builder = services.AddHttpClient(name);
        builder.AddStandardResilienceHandler();
        return builder;
    }

    /// <summary>The service discovery address of a platform service's gRPC endpoint.</summary>
    public static Uri PlatformGrpcAddress(string serviceName) => new($"http://_grpc.{serviceName}");

    /// <summary>The retry policy of platform clients: UNAVAILABLE retried 3 times, 200 ms doubling to 2 s.</summary>
    public static MethodConfig DefaultRetry => new()
    {
        Names = { MethodName.Default },
        RetryPolicy = new RetryPolicy
        {
            MaxAttempts = 4,
            InitialBackoff = TimeSpan.FromMilliseconds(200),
            MaxBackoff = TimeSpan.FromSeconds(2),
            BackoffMultiplier = 2,
            RetryableStatusCodes = { Grpc.Core.StatusCode.Unavailable },
        },
    };

    /// <summary>
    /// Maps <c>/health</c> (every check: ready, one entry per dependency), <c>/alive</c> (liveness only), the
    /// grpc.health.v1 service over the same checks, and gRPC server reflection. Mapped in every environment.
    /// </summary>
    public static WebApplication MapDefaultEndpoints(this WebApplication app)
    {
        app.MapHealthChecks(HealthPath, new HealthCheckOptions { ResponseWriter = WriteHealthReport });
        app.MapHealthChecks(AlivePath, new HealthCheckOptions
        {
            Predicate = check => check.Tags.Contains(LiveTag),
            ResponseWriter = WriteHealthReport,
        });
        app.MapGrpcHealthChecksService();
        app.MapGrpcReflectionService();
        return app;
    }

    /// <summary>Writes a health report as JSON: overall status and one entry per check, with Utf8JsonWriter (AOT-safe).</summary>
    public static async Task WriteHealthReport(HttpContext context, HealthReport report)
    {
        context.Response.ContentType = "application/json; charset=utf-8";
        await using var json = new Utf8JsonWriter(context.Response.Body, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteString("status", report.Status.ToString());
        json.WriteNumber("durationMs", Math.Round(report.TotalDuration.TotalMilliseconds, 2));
        json.WriteStartObject("entries");
        foreach (var (name, entry) in report.Entries)
        {
            json.WriteStartObject(name);
            json.WriteString("status", entry.Status.ToString());
            if (entry.Description is { } description) json.WriteString("description", description);
            if (entry.Exception is { } exception) json.WriteString("error", exception.Message);
            if (entry.Data.Count > 0)
            {
                json.WriteStartObject("data");
                foreach (var (key, value) in entry.Data)
                {
                    switch (value)
                    {
                        case bool flag: json.WriteBoolean(key, flag); break;
                        case int or long or double: json.WriteNumber(key, Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture)); break;
                        default: json.WriteString(key, value?.ToString()); break;
                    }
                }
                json.WriteEndObject();
            }
            if (entry.Tags.Any())
            {
                json.WriteStartArray("tags");
                foreach (var tag in entry.Tags) json.WriteStringValue(tag);
                json.WriteEndArray();
            }
            json.WriteEndObject();
        }
        json.WriteEndObject();
        json.WriteEndObject();
    }
}
