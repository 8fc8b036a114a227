using Grpc.Core;
using Platform.Registry.V1;

namespace Platform.SessionRegistry.Tests;

public class ListTests : RegistryTestBase
{
    [Fact]
    public async Task Paging_visits_every_session_once_in_a_stable_order_even_while_sessions_change()
    {
        var created = new List<Session>();
        for (var i = 0; i < 230; i++)
            created.Add(await RegisterAsync(i % 2 == 0 ? "even" : "odd", $"{i}", labels: new Dictionary<string, string> { ["tier"] = i % 3 == 0 ? "gold" : "std" }));

        var seen = new List<Session>();
        var token = "";
        var pages = 0;
        do
        {
            var page = await Client.ListSessionsAsync(new ListSessionsRequest { PageSize = 40, PageToken = token });
            seen.AddRange(page.Sessions);
            token = page.NextPageToken;
            pages++;
            if (pages == 2) await Client.EndSessionAsync(new EndSessionRequest { Id = created[0].Id }); // changes mid-way
        } while (token.Length > 0);

        Assert.Equal(6, pages);
        Assert.Equal(created.Select(s => s.Id).Order(StringComparer.Ordinal), seen.Select(s => s.Id));
        Assert.Equal(seen.Select(s => s.Id).Order(StringComparer.Ordinal), seen.Select(s => s.Id));
    }

    [Fact]
    public async Task Filters_by_workload_state_and_label_selector_combine()
    {
        for (var i = 0; i < 30; i++)
            await RegisterAsync(i % 2 == 0 ? "even" : "odd", $"{i}", labels: new Dictionary<string, string> { ["tier"] = i % 3 == 0 ? "gold" : "std" });
        var ended = await RegisterAsync("even", "ended", labels: new Dictionary<string, string> { ["tier"] = "gold" });
        await Client.EndSessionAsync(new EndSessionRequest { Id = ended.Id });

        async Task<List<Session>> All(ListSessionsRequest request)
        {
            var result = new List<Session>();
            do
            {
                var page = await Client.ListSessionsAsync(request);
                result.AddRange(page.Sessions);
                request.PageToken = page.NextPageToken;
            } while (request.PageToken.Length > 0);
            return result;
        }

        Assert.Equal(16, (await All(new ListSessionsRequest { Workload = "even", PageSize = 3 })).Count);
        Assert.Equal(15, (await All(new ListSessionsRequest { Workload = "even", State = Session.Types.State.Active, PageSize = 4 })).Count);
        var gold = await All(new ListSessionsRequest { Workload = "even", LabelSelector = "tier=gold", PageSize = 2 });
        Assert.Equal(6, gold.Count); // 0, 6, 12, 18, 24 and the ended one
        Assert.All(gold, s => Assert.Equal("gold", s.Labels["tier"]));
        Assert.Equal(5, (await All(new ListSessionsRequest { LabelSelector = "tier=gold,!missing", State = Session.Types.State.Active, PageSize = 1 })).Count(s => s.Workload == "even"));
        Assert.Equal(20, (await All(new ListSessionsRequest { LabelSelector = "tier!=gold" })).Count);
        Assert.Empty(await All(new ListSessionsRequest { LabelSelector = "missing" }));
    }

    [Fact]
    public async Task A_token_used_with_other_filters_or_mangled_is_rejected()
    {
        for (var i = 0; i < 5; i++) await RegisterAsync("w", $"{i}");
        var page = await Client.ListSessionsAsync(new ListSessionsRequest { Workload = "w", PageSize = 2 });

        var other = await Assert.ThrowsAsync<RpcException>(() => Client.ListSessionsAsync(new ListSessionsRequest { Workload = "x", PageSize = 2, PageToken = page.NextPageToken }).ResponseAsync);
        var mangled = await Assert.ThrowsAsync<RpcException>(() => Client.ListSessionsAsync(new ListSessionsRequest { PageToken = "@@not-a-token" }).ResponseAsync);

        Assert.Equal(StatusCode.InvalidArgument, other.StatusCode);
        Assert.Contains("other filters", other.Status.Detail);
        Assert.Equal(StatusCode.InvalidArgument, mangled.StatusCode);
    }
}
