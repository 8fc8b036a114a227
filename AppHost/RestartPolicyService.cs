using System.Collections.Immutable;
using System.Globalization;
using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Platform.Restarts;

namespace Platform.AppHost;

/// <summary>
/// Applies <see cref="RestartPolicyAnnotation"/>s: follows every resource's state through
/// <see cref="ResourceNotificationService"/> and, when one exits that nobody stopped, starts it again after its
/// backoff with the <c>start</c> command (<c>restart</c> is disabled on a stopped resource). A stop that went through
/// DCP (the dashboard's stop or restart, the AppHost's shutdown) shows a Stopping state first; a crash does not.
/// </summary>
internal sealed class RestartPolicyService(
    DistributedApplicationModel model,
    ResourceNotificationService notifications,
    ResourceCommandService commands,
    ResourceLoggerService resourceLoggers,
    IHostApplicationLifetime lifetime,
    TimeProvider time,
    ILogger<RestartPolicyService> logger) : BackgroundService
{
    public const string RestartsProperty = "platform.restarts";
    public const string NextStartProperty = "platform.restart.next";
    public const string ReasonProperty = "platform.restart.reason";
    public const string GaveUpState = "FailedToStart";

    /// <summary>How the dashboard labels our properties (highlighted ones are shown without "show all").</summary>
    private static readonly Dictionary<string, string> DisplayNames = new()
    {
        [RestartsProperty] = "Restarts",
        [NextStartProperty] = "Next start at",
        [ReasonProperty] = "Restart policy",
    };

    private readonly Dictionary<string, Watched> _watched = new(StringComparer.Ordinal);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        foreach (var resource in model.Resources)
        {
            if (resource.TryGetLastAnnotation<RestartPolicyAnnotation>(out var annotation))
                _watched[resource.Name] = new Watched(resource, annotation, new RestartTracker(annotation.Policy, time));
        }
        if (_watched.Count == 0) return;

        try
        {
            await foreach (var change in notifications.WatchAsync(stoppingToken))
            {
                if (_watched.TryGetValue(change.Resource.Name, out var watched)) await ObserveAsync(watched, change.Snapshot);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        foreach (var watched in _watched.Values) watched.CancelPendingStart();
    }

    private async Task ObserveAsync(Watched w, CustomResourceSnapshot snapshot)
    {
        var state = snapshot.State?.Text;
        if (state == w.LastState && snapshot.HealthStatus == w.LastHealth) return;
        var previous = w.LastState;
        w.LastState = state;
        w.LastHealth = snapshot.HealthStatus;

        if (w.GaveUpReason is { } gaveUp && ResourceSnapshots.IsStopped(state) && state != GaveUpState)
        {
            // DCP may report the last run's end again after the verdict (its executable's later status updates carry
            // their own state: on a slow machine "Finished" came after "FailedToStart" and replaced it): the verdict
            // stands until someone starts the resource.
            await PublishGaveUpAsync(w, gaveUp);
            return;
        }

        if (state == KnownResourceStates.Starting)
        {
            w.GaveUpReason = null;
            w.StoppedOnRequest = false;
            w.HealthySinceStart = false;
            w.CancelPendingStart(); // started by someone else (the dashboard): that start stands
        }
        else if (state == KnownResourceStates.Running)
        {
            if (previous != KnownResourceStates.Running) w.Tracker.Started();
            if (!snapshot.Properties.Any(p => p.Name == RestartsProperty))
                await PublishAsync(w, s => s with { Properties = Set(s.Properties, RestartsProperty, w.Restarts) }); // shown from the start
            if (snapshot.HealthStatus == Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Healthy)
            {
                w.HealthySinceStart = true;
                w.ExitsWithoutHealth = 0;
            }
        }
        else if (state == KnownResourceStates.Stopping)
        {
            w.StoppedOnRequest = true;
            w.CancelPendingStart();
        }
        else if (ResourceSnapshots.IsStopped(state) && IsActive(previous) && !w.StoppedOnRequest && !lifetime.ApplicationStopping.IsCancellationRequested)
        {
            await OnCrashAsync(w, snapshot);
        }
    }

    /// <summary>The resource is about to be stopped on purpose by other means than DCP's (no Stopping state first).</summary>
    public void ExpectStop(IResource resource)
    {
        if (_watched.TryGetValue(resource.Name, out var w))
        {
            w.StoppedOnRequest = true;
            w.CancelPendingStart();
        }
    }

    private static bool IsActive(string? state) =>
        state == KnownResourceStates.Running || state == KnownResourceStates.Starting || state == KnownResourceStates.RuntimeUnhealthy;

    private async Task OnCrashAsync(Watched w, CustomResourceSnapshot snapshot)
    {
        var name = w.Resource.Name;
        var exit = snapshot.ExitCode is { } code ? $"exit code {code}" : snapshot.State?.Text ?? "an exit";
        if (!w.HealthySinceStart) w.ExitsWithoutHealth++;
        w.HealthySinceStart = false;
        var resourceLog = resourceLoggers.GetLogger(w.Resource);

        if (w.ExitsWithoutHealth >= w.Annotation.MaxExitsWithoutHealth)
        {
            var reason = $"exited {w.ExitsWithoutHealth} times without becoming healthy (last: {exit}); left stopped";
            w.Tracker.Stop();
            logger.LogError("{Resource} {Reason}; see its console log in the dashboard", name, reason);
            resourceLog.LogError("{Reason}", reason);
            w.GaveUpReason = reason;
            await PublishGaveUpAsync(w, reason);
            return;
        }

        w.Tracker.Exited(failed: true); // an exit nobody asked for is a failure, whatever its code
        var due = w.Tracker.NextStartAt ?? time.GetUtcNow();
        var delay = due - time.GetUtcNow();
        if (delay < TimeSpan.Zero) delay = TimeSpan.Zero;
        logger.LogWarning("{Resource} exited unexpectedly ({Exit}); restarting in {Delay:0.#} s", name, exit, delay.TotalSeconds);
        resourceLog.LogWarning("exited unexpectedly ({Exit}); the AppHost restarts it in {Delay:0.#} s", exit, delay.TotalSeconds);
        await PublishAsync(w, s => s with
        {
            Properties = Set(Set(s.Properties, NextStartProperty, due.ToString("O", CultureInfo.InvariantCulture)), ReasonProperty, $"exited unexpectedly ({exit})"),
        });

        var pending = new CancellationTokenSource();
        Interlocked.Exchange(ref w.PendingStart, pending)?.Cancel();
        _ = StartLaterAsync(w, delay, pending);
    }

    private async Task StartLaterAsync(Watched w, TimeSpan delay, CancellationTokenSource pending)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(pending.Token, lifetime.ApplicationStopping);
        try
        {
            await Task.Delay(delay, time, linked.Token);
            // From here on the start is ours: the Starting state it causes must not cancel it.
            if (Interlocked.CompareExchange(ref w.PendingStart, null, pending) != pending) return;
            // Counted before the start, not after it: a resource that exits at once is seen exiting (and may be given
            // up on) before the start command returns, and its state must already count this restart.
            w.Restarts++;
            await PublishAsync(w, s => s with
            {
                Properties = Set(Set(s.Properties, RestartsProperty, w.Restarts), NextStartProperty, null),
            });
            var result = await commands.ExecuteCommandAsync(w.Resource, KnownResourceCommands.StartCommand, lifetime.ApplicationStopping);
            if (!result.Success) logger.LogError("{Resource} could not be restarted: {Message}", w.Resource.Name, result.Message);
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception e) when (!lifetime.ApplicationStopping.IsCancellationRequested)
        {
            logger.LogError(e, "{Resource} could not be restarted", w.Resource.Name);
        }
    }

    private Task PublishGaveUpAsync(Watched w, string reason) => PublishAsync(w, s => s with
    {
        State = new ResourceStateSnapshot(GaveUpState, KnownResourceStateStyles.Error),
        Properties = Set(Set(s.Properties, ReasonProperty, reason), NextStartProperty, null),
    });

    private Task PublishAsync(Watched w, Func<CustomResourceSnapshot, CustomResourceSnapshot> change) =>
        notifications.PublishUpdateAsync(w.Resource, change);

    /// <summary>Sets (or, with null, removes) a custom property; custom properties survive DCP's own updates.</summary>
    internal static ImmutableArray<ResourcePropertySnapshot> Set(ImmutableArray<ResourcePropertySnapshot> properties, string name, object? value)
    {
        var kept = properties.Where(p => p.Name != name);
        var property = new ResourcePropertySnapshot(name, value) { DisplayName = DisplayNames.GetValueOrDefault(name), IsHighlighted = true };
        return (value is null ? kept : kept.Append(property)).ToImmutableArray();
    }

    private sealed class Watched(IResource resource, RestartPolicyAnnotation annotation, RestartTracker tracker)
    {
        public IResource Resource { get; } = resource;
        public RestartPolicyAnnotation Annotation { get; } = annotation;
        public RestartTracker Tracker { get; } = tracker;
        public string? LastState { get; set; }
        public Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus? LastHealth { get; set; }
        public volatile bool StoppedOnRequest;
        public bool HealthySinceStart { get; set; }
        public int ExitsWithoutHealth { get; set; }
        public int Restarts { get; set; }
        /// <summary>Why the policy gave up on the resource (left it stopped); null once it is started again.</summary>
        public string? GaveUpReason { get; set; }
        /// <summary>A start waiting for its backoff; taken (set to null) by whoever acts on it.</summary>
        public CancellationTokenSource? PendingStart;

        public void CancelPendingStart() => Interlocked.Exchange(ref PendingStart, null)?.Cancel();
    }
}
