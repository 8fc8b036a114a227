using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;

namespace Aspire.Hosting;

/// <summary>
/// An HTTP health check that notices a starting service within <see cref="PromptHttpHealthCheck.PollInterval"/>
/// of its first healthy answer, where <c>WithHttpHealthCheck</c> notices it only at Aspire's next check: after a
/// failed check Aspire waits 1 s, then 2 s, 3 s (ResourceHealthCheckService), so a service that needs 1.1 s to listen
/// is seen healthy 3 s after it started, and every WaitFor behind it starts that much later.
/// </summary>
public static class PromptHealthCheckExtensions
{
    /// <summary>
    /// Health from <paramref name="path"/> on the endpoint <paramref name="endpointName"/> (200 is healthy), as
    /// <c>WithHttpHealthCheck</c> does; but while the resource is not healthy yet (starting, or recovering) one check
    /// keeps asking every <see cref="PromptHttpHealthCheck.PollInterval"/> for up to
    /// <see cref="PromptHttpHealthCheck.Patience"/> before it reports the failure. A healthy resource that stops
    /// answering is reported at the first failed answer.
    /// </summary>
    public static IResourceBuilder<T> WithPromptHttpHealthCheck<T>(this IResourceBuilder<T> builder, string path, string endpointName)
        where T : IResourceWithEndpoints
    {
        var endpoint = builder.Resource.GetEndpoint(endpointName);
        var key = $"{builder.Resource.Name}_{endpointName}_{path}_prompt_check";
        builder.ApplicationBuilder.Services.AddHttpClient(key, client => client.Timeout = TimeSpan.FromSeconds(2));
        // A request every 50 ms while a service starts is not news for the console (Aspire mutes its own check's client too).
        builder.ApplicationBuilder.Services.AddLogging(logging => logging.AddFilter($"System.Net.Http.HttpClient.{key}", LogLevel.None));
        builder.ApplicationBuilder.Services.AddHealthChecks().Add(new HealthCheckRegistration(
            key,
            services => new PromptHttpHealthCheck(() => new Uri(new Uri(endpoint.Url), path),
                () => services.GetRequiredService<IHttpClientFactory>().CreateClient(key)),
            failureStatus: default,
            tags: default));
        return builder.WithHealthCheck(key);
    }
}

/// <summary>The check behind <see cref="PromptHealthCheckExtensions.WithPromptHttpHealthCheck"/>.</summary>
internal sealed class PromptHttpHealthCheck(Func<Uri> address, Func<HttpClient> client) : IHealthCheck
{
    public static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(50);

    /// <summary>How long one check waits for a resource that is not healthy yet: less than Aspire's longest pause between checks (5 s).</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(4);

    private volatile bool _healthy;

    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var deadline = DateTime.UtcNow + (_healthy ? TimeSpan.Zero : Patience);
        var http = client();
        while (true)
        {
            var result = await AskAsync(http, cancellationToken);
            _healthy = result.Status == HealthStatus.Healthy;
            if (_healthy || DateTime.UtcNow >= deadline) return result;
            await Task.Delay(PollInterval, cancellationToken);
        }
    }

    private async Task<HealthCheckResult> AskAsync(HttpClient http, CancellationToken cancellationToken)
    {
        Uri uri;
        try
        {
            uri = address();
        }
        catch (InvalidOperationException e)
        {
            return HealthCheckResult.Unhealthy("the endpoint has no address yet", e);
        }
        try
        {
            using var response = await http.GetAsync(uri, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            return response.IsSuccessStatusCode
                ? HealthCheckResult.Healthy()
                : HealthCheckResult.Unhealthy($"{uri} answered {(int)response.StatusCode} {response.ReasonPhrase}");
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return HealthCheckResult.Unhealthy($"{uri} does not answer: {e.Message}", e);
        }
    }
}
