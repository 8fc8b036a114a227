using Google.Protobuf;
using Grpc.Core;
using Platform.Monitor.V1;
using State = Platform.Monitor.V1.AgentStatus.Types.State;

namespace Platform.AgentMonitor.Tests;

public sealed class BadInputTests : MonitorTestBase
{
    public static TheoryData<string, string, string> Cases => new()
    {
        // name, target as protobuf JSON, expected field in the violation
        { "no probe", """{"id":"x"}""", "target.probe" },
        { "empty id", """{"process":{"pid":1}}""", "target.id" },
        { "id with spaces", """{"id":"a b","process":{"pid":1}}""", "target.id" },
        { "pid zero", """{"id":"x","process":{"pid":0}}""", "target.process.pid" },
        { "zero interval", """{"id":"x","interval":"0s","process":{"pid":1}}""", "target.interval" },
        { "negative interval", """{"id":"x","interval":"-5s","process":{"pid":1}}""", "target.interval" },
        { "zero timeout", """{"id":"x","timeout":"0s","process":{"pid":1}}""", "target.timeout" },
        { "negative idle_after", """{"id":"x","idleAfter":"-1s","process":{"pid":1}}""", "target.idle_after" },
        { "negative threshold", """{"id":"x","failureThreshold":-1,"process":{"pid":1}}""", "target.failure_threshold" },
        { "relative heartbeat path", """{"id":"x","heartbeatFile":{"path":"hb"}}""", "target.heartbeat_file.path" },
        { "address without port", """{"id":"x","grpcHealth":{"address":"localhost"}}""", "target.grpc_health.address" },
        { "address with path", """{"id":"x","grpcHealth":{"address":"http://localhost:80/x"}}""", "target.grpc_health.address" },
        { "port out of range", """{"id":"x","tcp":{"address":"127.0.0.1:70000"}}""", "target.tcp.address" },
        { "tcp with scheme", """{"id":"x","tcp":{"address":"http://127.0.0.1:80"}}""", "target.tcp.address" },
        { "ftp url", """{"id":"x","http":{"url":"ftp://host/file"}}""", "target.http.url" },
        { "relative url", """{"id":"x","http":{"url":"/healthz"}}""", "target.http.url" },
        { "bad regex", """{"id":"x","outputActivity":{"path":"/tmp/log","unhealthyPatterns":["(unclosed"]}}""", "target.output_activity.unhealthy_patterns[0]" },
        { "empty tmux target", """{"id":"x","tmuxPane":{"target":""}}""", "target.tmux_pane.target" },
        { "quote in tmux target", """{"id":"x","tmuxPane":{"target":"a'; kill-server; '"}}""", "target.tmux_pane.target" },
        { "session prefix", """{"id":"session/abc","process":{"pid":1}}""", "target.id" },
        { "no registry session", """{"id":"x","registryHeartbeat":{}}""", "target.registry_heartbeat.session_id" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Bad_targets_are_refused_with_the_field_and_the_monitor_keeps_serving(string name, string json, string field)
    {
        // A healthy target already being probed stays untouched by every refusal.
        var keep = NewTarget("keep");
        keep.Process = new ProcessProbe { Pid = Environment.ProcessId };
        await AddAsync(keep);

        var target = JsonParser.Default.Parse<Target>(json);
        var error = await AssertStatus(StatusCode.InvalidArgument, AddAsync(target));
        Assert.True(error.Status.Detail.Contains(field + ":", StringComparison.Ordinal), $"{name}: '{error.Status.Detail}' does not name {field}");
        var details = error.Trailers.Get("grpc-status-details-bin");
        Assert.NotNull(details);

        Assert.Equal(["keep"], (await Client.ListTargetsAsync(new ListTargetsRequest())).Targets.Select(t => t.Id));
        await StatusAsync("keep", State.Healthy);
    }

    [Fact]
    public async Task An_unknown_probe_kind_from_a_newer_client_is_refused()
    {
        // A Target with a probe field this monitor does not know (field 99): it arrives as an unknown field.
        var bytes = new Target { Id = "future" }.ToByteArray().Concat(new byte[] { 0x9A, 0x06, 0x00 }).ToArray(); // field 99, length-delimited, empty
        var target = Target.Parser.ParseFrom(bytes);
        await AssertStatus(StatusCode.InvalidArgument, AddAsync(target), "target.probe: is missing or of a kind this monitor does not know");
    }

    [Fact]
    public async Task Missing_and_bad_ids_and_tokens()
    {
        await AssertStatus(StatusCode.InvalidArgument, Client.AddTargetAsync(new AddTargetRequest()).ResponseAsync, "target: is required");
        await AssertStatus(StatusCode.NotFound, Client.GetStatusAsync(new GetStatusRequest { TargetId = "nosuch" }).ResponseAsync, "'nosuch'");
        await AssertStatus(StatusCode.NotFound, Client.RemoveTargetAsync(new RemoveTargetRequest { TargetId = "nosuch" }).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.GetStatusAsync(new GetStatusRequest()).ResponseAsync, "target_id");
        await AssertStatus(StatusCode.InvalidArgument, Client.ListTargetsAsync(new ListTargetsRequest { PageSize = -1 }).ResponseAsync, "page_size");
        await AssertStatus(StatusCode.InvalidArgument, Client.ListStatusesAsync(new ListStatusesRequest { PageToken = "garbage!" }).ResponseAsync, "page_token");
        await AssertStatus(StatusCode.InvalidArgument, Client.ListStatusesAsync(new ListStatusesRequest { State = (State)42 }).ResponseAsync, "state");
    }

    [Fact]
    public async Task Lists_page_in_id_order_and_removal_forgets_the_target()
    {
        for (var i = 0; i < 5; i++)
        {
            var t = NewTarget($"t{i}", interval: TimeSpan.FromSeconds(5));
            t.Workload = i % 2 == 0 ? "even" : "odd";
            t.FailureThreshold = 0;
            t.IdleAfter = null;
            t.Process = new ProcessProbe { Pid = Environment.ProcessId };
            await AddAsync(t);
        }
        var first = await Client.ListTargetsAsync(new ListTargetsRequest { PageSize = 2 });
        Assert.Equal(["t0", "t1"], first.Targets.Select(t => t.Id));
        var second = await Client.ListTargetsAsync(new ListTargetsRequest { PageSize = 2, PageToken = first.NextPageToken });
        Assert.Equal(["t2", "t3"], second.Targets.Select(t => t.Id));
        await AssertStatus(StatusCode.InvalidArgument, Client.ListTargetsAsync(new ListTargetsRequest { PageSize = 2, PageToken = first.NextPageToken, Workload = "even" }).ResponseAsync, "other filters");
        var even = await Client.ListTargetsAsync(new ListTargetsRequest { Workload = "even" });
        Assert.Equal(["t0", "t2", "t4"], even.Targets.Select(t => t.Id));
        // Defaults are filled in and shown.
        Assert.Equal(3, even.Targets[0].FailureThreshold);
        Assert.Equal(TimeSpan.FromMinutes(5), even.Targets[0].IdleAfter.ToTimeSpan());

        await Client.RemoveTargetAsync(new RemoveTargetRequest { TargetId = "t2" });
        await AssertStatus(StatusCode.NotFound, Client.GetStatusAsync(new GetStatusRequest { TargetId = "t2" }).ResponseAsync);
        Assert.Equal(4, (await Client.ListStatusesAsync(new ListStatusesRequest())).Statuses.Count);
    }
}
