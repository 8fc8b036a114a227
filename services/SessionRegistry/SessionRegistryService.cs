using System.Text;
using Grpc.Core;
using Microsoft.Extensions.Options;
using Platform.Registry.V1;
using Platform.ServiceDefaults;

namespace Platform.SessionRegistry;

/// <summary>The gRPC edge of the registry: validates, calls the <see cref="RegistryEngine"/>, maps the result.</summary>
public sealed class SessionRegistryService(RegistryEngine engine, IOptions<RegistryOptions> options, WatcherLimit watchers)
    : Registry.V1.SessionRegistry.SessionRegistryBase
{
    /// <summary>An agent's token is good for its own instance's session only.</summary>
    private void CheckAgent(ServerCallContext context, IEnumerable<string> sessionIds)
    {
        if (PlatformTokens.AgentOf(context) is not { } instance) return;
        foreach (var id in sessionIds)
            if (engine.Get(id) is { } session && session.Instance != instance)
                throw PlatformException.PermissionDenied($"an agent's token is good for its own instance's session only; session '{id}' belongs to another instance");
    }

    public override Task<Session> RegisterSession(RegisterSessionRequest request, ServerCallContext context)
    {
        Validation.Check(request, options.Value);
        if (PlatformTokens.AgentOf(context) is { } instance && request.Instance != instance)
            throw PlatformException.PermissionDenied($"an agent's token registers sessions of its own instance only ('{instance}')");
        return engine.RegisterAsync(request, context.CancellationToken);
    }

    /// <summary>Many registrations in one call, each as <see cref="RegisterSession"/> would make it and all at once
    /// (their writes share the store's group commits); one result per request, in order.</summary>
    public override async Task<RegisterSessionsResponse> RegisterSessions(RegisterSessionsRequest request, ServerCallContext context)
    {
        BatchCalls.CheckSize(request.Requests.Count, "requests", "registration");
        var results = await BatchCalls.EachAsync(request.Requests, async r =>
        {
            Validation.Check(r, options.Value);
            return new RegisterSessionResult { Session = await engine.RegisterAsync(r, context.CancellationToken) };
        }, (_, code, message) => new RegisterSessionResult { Code = (int)code, Message = message });
        return new RegisterSessionsResponse { Results = { results } };
    }

    public override Task<HeartbeatResponse> Heartbeat(HeartbeatRequest request, ServerCallContext context)
    {
        Validation.CheckIds(request.Ids, "ids");
        CheckAgent(context, request.Ids);
        return Task.FromResult(engine.Heartbeat(request.Ids));
    }

    public override async Task KeepAlive(IAsyncStreamReader<KeepAliveRequest> requestStream, IServerStreamWriter<KeepAliveResponse> responseStream, ServerCallContext context)
    {
        await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken))
        {
            Validation.CheckIds(request.Ids, "ids");
            CheckAgent(context, request.Ids);
            var renewed = engine.Heartbeat(request.Ids);
            await responseStream.WriteAsync(new KeepAliveResponse
            {
                RenewedIds = { renewed.RenewedIds },
                UnknownIds = { renewed.UnknownIds },
                ExpiredIds = { renewed.ExpiredIds },
                Revision = engine.Hub.Revision,
            }, context.CancellationToken);
        }
    }

    public override Task<Session> GetSession(GetSessionRequest request, ServerCallContext context)
    {
        Validation.CheckId(request.Id);
        CheckAgent(context, [request.Id]);
        return Task.FromResult(engine.Get(request.Id) ?? throw PlatformException.NotFound("session", request.Id));
    }

    public override Task<ListSessionsResponse> ListSessions(ListSessionsRequest request, ServerCallContext context)
    {
        var v = new Violations();
        if (request.PageSize < 0 || request.PageSize > Limits.MaxPageSize) v.Add("page_size", $"must be between 0 and {Limits.MaxPageSize}");
        if (!System.Enum.IsDefined(request.State)) v.Add("state", $"{(int)request.State} is not a session state");
        var selector = LabelSelector.TryParse(request.LabelSelector, out var selectorError);
        if (selector is null) v.Add("label_selector", selectorError!);
        var filters = $"{request.Workload}\n{(int)request.State}\n{request.LabelSelector}";
        var after = "";
        if (request.PageToken.Length > 0 && !PageToken.TryRead(request.PageToken, filters, out after, out var tokenError))
            v.Add("page_token", tokenError!);
        v.ThrowIfAny();

        var revision = engine.Hub.Revision;
        var pageSize = request.PageSize == 0 ? Limits.DefaultPageSize : request.PageSize;
        var sessions = engine.List(request.Workload, request.State, selector!, after, pageSize, out var more);
        return Task.FromResult(new ListSessionsResponse
        {
            Sessions = { sessions },
            NextPageToken = more ? PageToken.Write(sessions[^1].Id, filters) : "",
            Revision = revision,
        });
    }

    public override Task<Session> EndSession(EndSessionRequest request, ServerCallContext context)
    {
        Validation.CheckId(request.Id);
        Validation.CheckReason(request.Reason);
        CheckAgent(context, [request.Id]);
        return engine.EndAsync(request.Id, request.Reason, context.CancellationToken);
    }

    public override async Task WatchSessions(WatchSessionsRequest request, IServerStreamWriter<SessionEvent> responseStream, ServerCallContext context)
    {
        if (request.FromRevision < 0) throw PlatformException.Invalid("from_revision", "must not be negative");
        using var place = watchers.Enter(options.Value.MaxWatchers, "Registry:MaxWatchers");
        using var watcher = engine.Hub.Subscribe(request.FromRevision, request.Workload);
        // Headers first, so a client knows it is subscribed before the first change arrives.
        await context.WriteResponseHeadersAsync([]);
        await foreach (var sessionEvent in watcher.Events.ReadAllAsync(context.CancellationToken))
            await responseStream.WriteAsync(sessionEvent, context.CancellationToken);
    }
}
