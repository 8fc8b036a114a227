using System.Diagnostics;
using System.Text;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Options;
using Platform.Launcher.V1;
using Platform.ServiceDefaults;

namespace Platform.Launcher;

/// <summary>The gRPC edge of the launcher: validates, calls the <see cref="InstanceManager"/>, maps the result.</summary>
public sealed class LauncherService(InstanceManager instances, IOptionsMonitor<LauncherOptions> options, WatcherLimit watchers) : V1.Launcher.LauncherBase
{
    private static readonly TimeSpan FollowInterval = TimeSpan.FromMilliseconds(50);

    public override async Task<Instance> Launch(LaunchRequest request, ServerCallContext context)
    {
        var launch = LaunchValidation.Resolve(request, options.CurrentValue) with
        {
            TraceParent = context.RequestHeaders.GetValue("traceparent"),
            TraceState = context.RequestHeaders.GetValue("tracestate"),
        };
        using var slot = instances.EnterLaunch(options.CurrentValue.MaxLaunchesInFlight);
        return await instances.LaunchAsync(launch);
    }

    /// <summary>Many launches in one call, each as <see cref="Launch"/> would make it and all at once; one result per
    /// item, in order, a refused one among them leaving the others alone.</summary>
    public override async Task<LaunchBatchResponse> LaunchBatch(LaunchBatchRequest request, ServerCallContext context)
    {
        BatchCalls.CheckSize(request.Items.Count, "items", "launch");
        var results = await BatchCalls.EachAsync(request.Items, async item =>
        {
            if (item.Request is null) throw PlatformException.Invalid("request", "is missing");
            var launch = LaunchValidation.Resolve(item.Request, options.CurrentValue) with
            {
                TraceParent = item.Traceparent.Length > 0 ? item.Traceparent : null,
                TraceState = item.Tracestate.Length > 0 ? item.Tracestate : null,
            };
            Activity.Current = null; // not under the batch call's own span: each launch belongs to its caller's trace
            // Each launch its own span in its caller's trace, as Launch's server span is: the child continues it.
            using var span = launch.TraceParent is not null && ActivityContext.TryParse(launch.TraceParent, launch.TraceState, out var parent)
                ? Source.StartActivity("launcher.launch", ActivityKind.Server, parent, [new("workload", launch.Workload)])
                : null;
            using var slot = instances.EnterLaunch(options.CurrentValue.MaxLaunchesInFlight);
            return new LaunchResult { Instance = await instances.LaunchAsync(launch) };
        }, (_, code, message) => new LaunchResult { Code = (int)code, Message = message });
        return new LaunchBatchResponse { Results = { results } };
    }

    private static readonly ActivitySource Source = new("Platform.Launcher");

    public override Task<Instance> StopInstance(StopInstanceRequest request, ServerCallContext context)
    {
        TimeSpan? grace = null;
        if (request.Grace is { } g)
        {
            if (!Durations.IsValid(g)) throw PlatformException.Invalid("grace", Durations.NotADuration);
            grace = g.ToTimeSpan();
            if (grace < TimeSpan.Zero || grace > LaunchLimits.MaxStopGrace)
                throw PlatformException.Invalid("grace", $"must be between 0 and {LaunchLimits.MaxStopGrace.TotalMinutes:0} minutes");
        }
        return instances.StopInstanceAsync(RequireId(request.Id), grace, context.CancellationToken);
    }

    public override Task<Instance> ArmSuccessor(ArmSuccessorRequest request, ServerCallContext context)
    {
        var id = RequireId(request.InstanceId);
        var successor = request.Successor is { } launch ? LaunchValidation.Resolve(launch, options.CurrentValue) : null;
        return Task.FromResult(instances.ArmSuccessor(id, successor, request.OnFailureOnly));
    }

    public override Task<Instance> GetInstance(GetInstanceRequest request, ServerCallContext context) =>
        Task.FromResult(instances.Get(RequireId(request.Id)));

    public override Task<ListInstancesResponse> ListInstances(ListInstancesRequest request, ServerCallContext context)
    {
        if (request.PageSize < 0 || request.PageSize > 1000) throw PlatformException.Invalid("page_size", "must be between 0 and 1000");
        var filters = $"{request.Workload}\n{(int)request.State}";
        var after = "";
        if (request.PageToken.Length > 0 && !PageToken.TryRead(request.PageToken, filters, out after, out var tokenError))
            throw PlatformException.Invalid("page_token", tokenError!);
        var size = request.PageSize == 0 ? 100 : request.PageSize;
        var page = instances.List(request.Workload, request.State, after, size + 1);
        var more = page.Count > size;
        if (more) page.RemoveAt(size);
        return Task.FromResult(new ListInstancesResponse
        {
            Instances = { page },
            NextPageToken = more ? PageToken.Write(page[^1].Id, filters) : "",
        });
    }

    public override async Task WatchInstanceEvents(WatchInstanceEventsRequest request, IServerStreamWriter<InstanceEvent> responseStream, ServerCallContext context)
    {
        using var place = watchers.Enter(options.CurrentValue.MaxWatchers, "Launcher:MaxWatchers");
        var events = instances.Subscribe(out var subscription);
        using (subscription)
        {
            await context.WriteResponseHeadersAsync([]);
            await foreach (var e in events.ReadAllAsync(context.CancellationToken))
            {
                if (request.Workload.Length > 0 && e.Instance.Workload != request.Workload) continue;
                if (request.InstanceId.Length > 0 && e.Instance.Id != request.InstanceId) continue;
                await responseStream.WriteAsync(e, context.CancellationToken);
            }
        }
    }

    /// <summary>The last tail_lines of stdout and of stderr, then (follow) new output until the instance exits.</summary>
    public override async Task StreamLogs(StreamLogsRequest request, IServerStreamWriter<LogEntry> responseStream, ServerCallContext context)
    {
        if (request.TailLines < 0) throw PlatformException.Invalid("tail_lines", "must not be negative");
        var (directory, exited) = instances.Output(RequireId(request.Id));
        var streams = new[]
        {
            new LogFile(Path.Combine(directory, "stdout.log"), LogEntry.Types.Stream.Stdout),
            new LogFile(Path.Combine(directory, "stderr.log"), LogEntry.Types.Stream.Stderr),
        };
        var token = context.CancellationToken;

        var tailed = 0;
        foreach (var file in streams)
        {
            foreach (var line in file.Tail(request.TailLines))
            {
                await responseStream.WriteAsync(file.Entry(line), token);
                tailed++;
            }
        }
        if (!request.Follow) return;
        // Headers now (unless the tail's first line sent them): a client that waits for them knows that everything
        // written from here on will follow.
        if (tailed == 0) await context.WriteResponseHeadersAsync([]);

        while (!token.IsCancellationRequested)
        {
            var done = exited.IsCompleted; // read once more after the exit, then stop
            foreach (var file in streams)
            {
                foreach (var line in file.ReadNew()) await responseStream.WriteAsync(file.Entry(line), token);
            }
            if (done) return;
            await Task.WhenAny(exited, Task.Delay(FollowInterval, token));
        }
    }

    private static string RequireId(string id) =>
        id.Length == 26 && System.Ulid.TryParse(id, out _) ? id : throw PlatformException.Invalid("id", $"'{id}' is not an instance id (a 26-character ULID)");

    /// <summary>One output file read from an offset; a file that shrank (rotated) is read again from its start.</summary>
    private sealed class LogFile(string path, LogEntry.Types.Stream stream)
    {
        private long _offset;
        private string _partial = "";

        public LogEntry Entry(string line) => new() { Stream = stream, Text = line, Time = Timestamp.FromDateTime(DateTime.UtcNow) };

        public List<string> Tail(int lines)
        {
            if (!File.Exists(path)) return [];
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            _offset = file.Length;
            if (lines == 0) return [];
            // Read backwards in blocks until enough line breaks are seen.
            var block = new byte[64 * 1024];
            var position = file.Length;
            var collected = new List<byte>();
            var newlines = 0;
            while (position > 0 && newlines <= lines)
            {
                var count = (int)Math.Min(block.Length, position);
                position -= count;
                file.Position = position;
                file.ReadExactly(block, 0, count);
                collected.InsertRange(0, block.Take(count));
                newlines = collected.Count(b => b == (byte)'\n');
            }
            if (collected.Count == 0) return []; // an empty file has no lines (not one empty line)
            var text = Encoding.UTF8.GetString(collected.ToArray());
            var all = text.Split('\n');
            var complete = text.EndsWith('\n') ? all[..^1] : all;
            return complete.TakeLast(lines).ToList();
        }

        public List<string> ReadNew()
        {
            if (!File.Exists(path)) return [];
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            if (file.Length < _offset)
            {
                _offset = 0;
                _partial = "";
            }
            if (file.Length == _offset) return [];
            file.Position = _offset;
            var buffer = new byte[file.Length - _offset];
            file.ReadExactly(buffer);
            _offset += buffer.Length;
            var text = _partial + Encoding.UTF8.GetString(buffer);
            var parts = text.Split('\n');
            _partial = parts[^1];
            return parts[..^1].ToList();
        }
    }
}
