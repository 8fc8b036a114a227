using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Platform.Registry.V1;

namespace Platform.SessionRegistry.Tests;

/// <summary>Every caller mistake gets INVALID_ARGUMENT (with the field named) or NOT_FOUND, never INTERNAL.</summary>
public class BadInputTests : RegistryTestBase
{
    private static RegisterSessionRequest Valid() => new() { Workload = "w", Instance = "i" };

    public static TheoryData<string, RegisterSessionRequest> BadRegistrations()
    {
        RegisterSessionRequest With(Action<RegisterSessionRequest> change)
        {
            var request = Valid();
            change(request);
            return request;
        }

        var tooManyLabels = Valid();
        for (var i = 0; i < 65; i++) tooManyLabels.Labels[$"k{i}"] = "v";
        return new TheoryData<string, RegisterSessionRequest>
        {
            { "workload", With(r => r.Workload = "") },
            { "workload", With(r => r.Workload = "   ") },
            { "workload", With(r => r.Workload = "Not_A_Name") },
            { "instance", With(r => r.Instance = new string('x', 254)) },
            { "instance", With(r => r.Instance = "tab\there") },
            { "ttl", With(r => r.Ttl = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(500))) },
            { "ttl", With(r => r.Ttl = Duration.FromTimeSpan(TimeSpan.FromDays(2))) },
            { "ttl", With(r => r.Ttl = new Duration { Seconds = -5 }) },
            { "labels", tooManyLabels },
            { "labels[bad key!]", With(r => r.Labels["bad key!"] = "v") },
            { "labels[-leading]", With(r => r.Labels["-leading"] = "v") },
            { "labels[ok]", With(r => r.Labels["ok"] = "spaces are not allowed") },
            { "attributes[]", With(r => r.Attributes[""] = "v") },
            { "pid", With(r => r.Pid = -1) },
            { "request_id", With(r => r.RequestId = new string('r', 200)) },
        };
    }

    [Theory]
    [MemberData(nameof(BadRegistrations))]
    public async Task Bad_registrations_are_invalid_arguments_naming_the_field(string field, RegisterSessionRequest request)
    {
        var error = await Assert.ThrowsAsync<RpcException>(() => Client.RegisterSessionAsync(request).ResponseAsync);

        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        var details = error.GetRpcStatus()!.GetDetail<BadRequest>();
        Assert.Contains(details.FieldViolations, v => v.Field == field);
        Assert.Contains(field.Split('[')[0], error.Status.Detail);
        Assert.Empty((await Client.ListSessionsAsync(new ListSessionsRequest())).Sessions); // nothing half-done
    }

    [Fact]
    public async Task Unknown_ids_are_not_found_and_malformed_ids_invalid()
    {
        var unknown = System.Ulid.NewUlid().ToString();

        await AssertStatus(StatusCode.NotFound, Client.GetSessionAsync(new GetSessionRequest { Id = unknown }).ResponseAsync);
        await AssertStatus(StatusCode.NotFound, Client.EndSessionAsync(new EndSessionRequest { Id = unknown }).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.GetSessionAsync(new GetSessionRequest { Id = "nope" }).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.GetSessionAsync(new GetSessionRequest()).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.EndSessionAsync(new EndSessionRequest { Id = unknown, Reason = new string('r', 2000) }).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.HeartbeatAsync(new HeartbeatRequest()).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.HeartbeatAsync(new HeartbeatRequest { Ids = { "x" } }).ResponseAsync);
    }

    [Fact]
    public async Task Bad_list_and_watch_requests_are_invalid_arguments()
    {
        await AssertStatus(StatusCode.InvalidArgument, Client.ListSessionsAsync(new ListSessionsRequest { PageSize = 5000 }).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.ListSessionsAsync(new ListSessionsRequest { PageSize = -1 }).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.ListSessionsAsync(new ListSessionsRequest { LabelSelector = "a=b,,c" }).ResponseAsync);
        await AssertStatus(StatusCode.InvalidArgument, Client.ListSessionsAsync(new ListSessionsRequest { State = (Session.Types.State)42 }).ResponseAsync);
        using var watch = Watch(-3);
        await AssertStatus(StatusCode.InvalidArgument, watch.ResponseStream.MoveNext(CancellationToken.None));
    }

    private static Task AssertStatus(StatusCode expected, Task call) => Testing.GrpcAssert.StatusAsync(expected, call);
}
