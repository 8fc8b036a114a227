using Grpc.Core;
using Platform.ServiceDefaults;
using Platform.Supervisor.V1;

namespace Platform.Supervisor;

/// <summary>The Supervisor's gRPC surface (platform.supervisor.v1).</summary>
public sealed class SupervisorService(SupervisorEngine engine, WorkloadStore store, TimeProvider time, Microsoft.Extensions.Options.IOptions<SupervisorOptions> options, WatcherLimit watchers) : V1.Supervisor.SupervisorBase
{
    private const int MaxPageSize = 1000;

    public override async Task<Workload> ApplyWorkload(ApplyWorkloadRequest request, ServerCallContext context)
    {
        engine.EnsureActing();
        var v = new Violations();
        WorkloadValidation.Validate(request.Workload, v);
        if (request.RequestId.Length > 128) v.Add("request_id", "must be at most 128 characters");
        v.ThrowIfAny();
        if (request.RequestId.Length > 0 && store.Answered(request.RequestId, time.GetUtcNow()) is { } first)
            return engine.Get(first.Name) ?? first;
        var workload = await ApplyValidatedAsync(request.Workload);
        if (request.RequestId.Length > 0) store.Answer(request.RequestId, workload, time.GetUtcNow());
        return workload;
    }

    /// <summary>A workload that passed validation, as stored: its status the Supervisor's, its policy spelt out.</summary>
    private Task<Workload> ApplyValidatedAsync(Workload requested)
    {
        var spec = requested.Clone();
        spec.Status = null;
        spec.RestartPolicy = WorkloadValidation.Describe(WorkloadValidation.ToPolicy(spec.RestartPolicy));
        return engine.ApplyAsync(spec);
    }

    public override async Task<ApplyWorkloadsResponse> ApplyWorkloads(ApplyWorkloadsRequest request, ServerCallContext context)
    {
        engine.EnsureActing();
        BatchCalls.CheckSize(request.Workloads.Count, "workloads", "workload");
        if (request.Workloads.GroupBy(w => w.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Key.Length > 0 && g.Count() > 1) is { } twice)
            throw PlatformException.Invalid("workloads", $"names workload '{twice.Key}' {twice.Count()} times; each may be applied once per call");
        // All at once, as that many ApplyWorkload calls would be, but in one round trip: the workloads' first starts
        // go to the launcher together and their stores share commits (WorkloadStore's group commit).
        var results = await BatchCalls.EachAsync(request.Workloads, async w =>
        {
            var v = new Violations();
            WorkloadValidation.Validate(w, v);
            v.ThrowIfAny();
            var before = engine.Get(w.Name);
            var after = await ApplyValidatedAsync(w);
            var change = before is null ? ApplyResult.Types.Change.Created
                : before.Revision == after.Revision ? ApplyResult.Types.Change.Unchanged : ApplyResult.Types.Change.Configured;
            return new ApplyResult { Name = w.Name, Workload = after, Change = change };
        }, (w, code, message) => new ApplyResult { Name = w.Name, Code = (int)code, Message = message });
        return new ApplyWorkloadsResponse { Results = { results } };
    }

    public override async Task<DeleteWorkloadResponse> DeleteWorkload(DeleteWorkloadRequest request, ServerCallContext context)
    {
        engine.EnsureActing();
        RequireName(request.Name);
        if (!await engine.DeleteAsync(request.Name)) throw PlatformException.NotFound("workload", request.Name);
        return new DeleteWorkloadResponse();
    }

    public override Task<Workload> GetWorkload(GetWorkloadRequest request, ServerCallContext context)
    {
        engine.EnsureActing();
        RequireName(request.Name);
        return Task.FromResult(engine.Get(request.Name) ?? throw PlatformException.NotFound("workload", request.Name));
    }

    public override Task<ListWorkloadsResponse> ListWorkloads(ListWorkloadsRequest request, ServerCallContext context)
    {
        engine.EnsureActing();
        var v = new Violations();
        if (request.PageSize is < 0 or > MaxPageSize) v.Add("page_size", $"must be between 0 and {MaxPageSize}");
        var after = "";
        if (request.PageToken.Length > 0 && !PageToken.TryRead(request.PageToken, "", out after, out var error)) v.Add("page_token", error!);
        v.ThrowIfAny();
        var size = request.PageSize == 0 ? 100 : request.PageSize;
        var page = engine.List(after, size + 1);
        var more = page.Count > size;
        if (more) page.RemoveAt(size);
        return Task.FromResult(new ListWorkloadsResponse { Workloads = { page }, NextPageToken = more ? PageToken.Write(page[^1].Name, "") : "" });
    }

    public override Task<Workload> RestartWorkload(RestartWorkloadRequest request, ServerCallContext context)
    {
        engine.EnsureActing();
        RequireName(request.Name);
        return engine.RestartAsync(request.Name, request.Reason) ?? throw PlatformException.NotFound("workload", request.Name);
    }

    public override async Task WatchWorkloads(WatchWorkloadsRequest request, IServerStreamWriter<WorkloadEvent> responseStream, ServerCallContext context)
    {
        engine.EnsureActing();
        if (request.Name.Length > 0 && !WorkloadName.IsValid(request.Name)) throw PlatformException.Invalid("name", $"'{request.Name}' is not a workload name");
        using var place = watchers.Enter(options.Value.MaxWatchers, "Supervisor:MaxWatchers");
        var events = engine.Watch(request.Name, out var subscription);
        using (subscription)
        {
            await context.WriteResponseHeadersAsync([]);
            await foreach (var e in events.ReadAllAsync(context.CancellationToken))
                await responseStream.WriteAsync(e, context.CancellationToken);
        }
    }

    public override Task<ListWorkloadHistoryResponse> ListWorkloadHistory(ListWorkloadHistoryRequest request, ServerCallContext context)
    {
        engine.EnsureActing();
        RequireName(request.Name);
        var v = new Violations();
        if (request.PageSize is < 0 or > MaxPageSize) v.Add("page_size", $"must be between 0 and {MaxPageSize}");
        long before = 0;
        if (request.PageToken.Length > 0 && (!PageToken.TryRead(request.PageToken, request.Name, out var after, out var error) ||
                !long.TryParse(after, System.Globalization.CultureInfo.InvariantCulture, out before) || before <= 0))
            v.Add("page_token", error ?? "is not a token from a previous ListWorkloadHistory call");
        v.ThrowIfAny();
        if (engine.Get(request.Name) is null) throw PlatformException.NotFound("workload", request.Name);
        var size = request.PageSize == 0 ? 100 : request.PageSize;
        var page = store.History(request.Name, before, size + 1);
        var more = page.Count > size;
        if (more) page.RemoveAt(size);
        return Task.FromResult(new ListWorkloadHistoryResponse
        {
            Entries = { page },
            NextPageToken = more ? PageToken.Write(page[^1].Sequence.ToString(System.Globalization.CultureInfo.InvariantCulture), request.Name) : "",
        });
    }

    private static void RequireName(string name)
    {
        if (name.Length == 0) throw PlatformException.Invalid("name", "is required");
        if (!WorkloadName.IsValid(name)) throw PlatformException.Invalid("name", $"'{name}' is not a workload name");
    }
}
