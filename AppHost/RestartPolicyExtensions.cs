using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Platform.AppHost;
using Platform.Restarts;

namespace Aspire.Hosting;

/// <summary>What Aspire does not do: restart a resource that exits by itself (DCP leaves it Exited).</summary>
public static class RestartPolicyExtensions
{
    /// <summary>
    /// The AppHost's default for its services: 1 s doubling to 30 s, the backoff reset after 30 s of stable running,
    /// no restart limit; but a resource that exits <see cref="RestartPolicyAnnotation.MaxExitsWithoutHealth"/> times
    /// without ever becoming healthy is left stopped.
    /// </summary>
    public static RestartPolicy DefaultPolicy { get; } = new()
    {
        InitialBackoff = TimeSpan.FromSeconds(1),
        Multiplier = 2,
        MaxBackoff = TimeSpan.FromSeconds(30),
        StableAfter = TimeSpan.FromSeconds(30),
        MaxRestarts = int.MaxValue,
    };

    /// <summary>
    /// Restarts the resource whenever it exits without being asked to (a crash, a kill, an exit of its own), after
    /// the policy's backoff, through the resource's own <c>start</c> command (so WaitFor applies again). A stop from
    /// the dashboard, a dashboard restart and the AppHost's shutdown are not crashes. The dashboard shows the restart
    /// count and, while backing off, when the next start is due.
    /// </summary>
    public static IResourceBuilder<T> WithRestartPolicy<T>(this IResourceBuilder<T> builder, RestartPolicy? policy = null, int maxExitsWithoutHealth = 5)
        where T : IResource
    {
        var services = builder.ApplicationBuilder.Services;
        if (!services.Any(d => d.ServiceType == typeof(RestartPolicyService)))
        {
            services.AddSingleton<RestartPolicyService>();
            services.AddHostedService(sp => sp.GetRequiredService<RestartPolicyService>());
        }
        builder.ApplicationBuilder.Services.TryAddSingleton(TimeProvider.System);
        return builder.WithAnnotation(new RestartPolicyAnnotation(policy ?? DefaultPolicy, maxExitsWithoutHealth), ResourceAnnotationMutationBehavior.Replace);
    }
}

/// <summary>The restart policy of one resource (data; <see cref="RestartPolicyService"/> applies it).</summary>
public sealed record RestartPolicyAnnotation(RestartPolicy Policy, int MaxExitsWithoutHealth) : IResourceAnnotation;
