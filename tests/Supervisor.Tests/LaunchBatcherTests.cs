using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Platform.Launcher.V1;
using Platform.Testing;

namespace Platform.Supervisor.Tests;

/// <summary>The Supervisor's launch batches against the real Launcher: what is queued together goes in one LaunchBatch
/// call, each launch with its own instance, trace and error; a Launcher without LaunchBatch gets single calls.</summary>
public sealed class LaunchBatcherTests : SupervisorTestBase
{
    private static readonly DateTime Later = DateTime.UtcNow.AddMinutes(5);

    private static string TraceId(int i) => $"{i + 1:x32}";

    private static LaunchRequest Sleeper(string workload) => new()
    {
        Process = new ProcessSpec { Executable = "sleep", Args = { "300" } },
        Workload = workload,
        RequestId = $"{workload}-{Guid.NewGuid():N}",
    };

    [Fact]
    public async Task Launches_queued_together_go_in_one_call_each_with_its_own_instance_trace_and_error()
    {
        var sends = new List<Action>();
        var batcher = new LaunchBatcher(new NodeClient("local", LauncherHost.Address, new Dictionary<string, string>(), 0, LauncherClient, TimeProvider.System),
            send => { lock (sends) sends.Add(send); });

        var launches = Enumerable.Range(0, 25).Select(i => batcher.LaunchAsync(Sleeper($"batched-{i}"), null, $"00-{TraceId(i)}-00f067aa0ba902b7-01", Later, default)).ToList();
        var missing = batcher.LaunchAsync(new LaunchRequest { Template = "no-such-template", Workload = "missing" }, null, null, Later, default);
        Assert.Single(sends); // one send for all that queued before it ran
        Assert.False(launches[0].IsCompleted);
        sends[0]();

        var instances = await Task.WhenAll(launches);
        var error = await Assert.ThrowsAsync<RpcException>(() => missing);
        Assert.Equal(StatusCode.NotFound, error.StatusCode);
        Assert.Contains("no-such-template", error.Status.Detail, StringComparison.Ordinal);
        Assert.Equal((1L, 26L), batcher.Sent);
        Assert.Equal(25, instances.Select(i => i.Id).Distinct().Count());
        for (var i = 0; i < instances.Length; i++)
        {
            Assert.Equal($"batched-{i}", instances[i].Workload);
            var environ = await ProcessEnvironment.ReadAsync(instances[i].Pid);
            Assert.Matches($"^TRACEPARENT=00-{TraceId(i)}-[0-9a-f]{{16}}-01$", Assert.Single(environ, e => e.StartsWith("TRACEPARENT=", StringComparison.Ordinal)));
        }

        // Queued after that send ran: a send of its own.
        var next = batcher.LaunchAsync(Sleeper("batched-next"), null, null, Later, default);
        Assert.Equal(2, sends.Count);
        sends[1]();
        Assert.Equal("batched-next", (await next).Workload);
        Assert.Equal((2L, 27L), batcher.Sent);
    }

    [Fact]
    public async Task A_launcher_without_LaunchBatch_gets_one_Launch_call_per_launch()
    {
        await using var before = await InProcessService.StartAsync(Sub("before-batches"), b => b.Services.AddSingleton(new LauncherBeforeBatches(LauncherClient)),
            app => app.MapGrpcService<LauncherBeforeBatches>());
        var client = new Launcher.V1.Launcher.LauncherClient(before.NewChannel());
        var batcher = new LaunchBatcher(new NodeClient("old", before.Address, new Dictionary<string, string>(), 0, client, TimeProvider.System));

        // As the Supervisor calls it: with the start span, current or not, beside its traceparent.
        var spans = Enumerable.Range(0, 5).Select(i => new System.Diagnostics.Activity("supervisor.start").SetParentId($"00-{TraceId(i)}-00f067aa0ba902b7-01")).ToList();
        var first = await Task.WhenAll(spans.Select((span, i) =>
        {
            span.Start();
            System.Diagnostics.Activity.Current = null;
            return batcher.LaunchAsync(Sleeper($"old-{i}"), span, span.Id, Later, default);
        }));
        spans.ForEach(s => s.Stop());
        var second = await batcher.LaunchAsync(Sleeper("old-next"), null, null, Later, default);

        Assert.Equal(5, first.Select(i => i.Id).Distinct().Count());
        Assert.Equal("old-next", second.Workload);
        Assert.Equal((0L, 0L), batcher.Sent); // no batch went through
        var environ = await ProcessEnvironment.ReadAsync(first[3].Pid);
        Assert.Matches($"^TRACEPARENT=00-{TraceId(3)}-[0-9a-f]{{16}}-01$", Assert.Single(environ, e => e.StartsWith("TRACEPARENT=", StringComparison.Ordinal)));
        var refused = await Assert.ThrowsAsync<RpcException>(() => batcher.LaunchAsync(new LaunchRequest { Template = "no-such-template" }, null, null, Later, default));
        Assert.Equal(StatusCode.NotFound, refused.StatusCode);
    }

    /// <summary>A Launcher as it was before LaunchBatch (that version cannot run here beside this one): Launch, passed
    /// on to the real Launcher with its trace context; LaunchBatch left UNIMPLEMENTED, as the generated base class
    /// answers.</summary>
    private sealed class LauncherBeforeBatches(Launcher.V1.Launcher.LauncherClient real) : Launcher.V1.Launcher.LauncherBase
    {
        public override async Task<Instance> Launch(LaunchRequest request, ServerCallContext context)
        {
            var headers = new Metadata();
            if (context.RequestHeaders.GetValue("traceparent") is { } traceparent) headers.Add("traceparent", traceparent);
            try
            {
                return await real.LaunchAsync(request, headers);
            }
            catch (RpcException e)
            {
                throw new RpcException(e.Status);
            }
        }
    }
}
