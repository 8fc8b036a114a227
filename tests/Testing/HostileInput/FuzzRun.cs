using Grpc.Core;
using Grpc.Health.V1;

namespace Platform.Testing.HostileInput;

/// <summary>Per service: cases sent, answered with a proper status, answered OK, the improper answers, and whether it
/// was still serving afterwards.</summary>
public sealed record FuzzResult(string Service, bool Authenticated, int Cases, int Proper, int Ok, IReadOnlyList<string> Improper, bool ServingAfter,
    IReadOnlyDictionary<string, Dictionary<StatusCode, int>> PerRpc);

/// <summary>Random and boundary messages to every RPC of the four services of a running AppHost, with its token or
/// without one.</summary>
public static class FuzzRun
{
    public static async Task<List<FuzzResult>> RunAsync(AppHostState state, bool authenticated, int unary, int streaming)
    {
        var results = new List<FuzzResult>();
        foreach (var (resource, service) in RawCalls.Services)
        {
            using var channel = PlatformChannel.Create(state[resource].GrpcUrl, authenticated ? state.Token : "");
            var (statuses, improper) = await RawCalls.FuzzAsync(channel.CreateCallInvoker(), service, unary, streaming);
            var cases = statuses.Values.Sum(s => s.Values.Sum());
            var ok = statuses.Values.Sum(s => s.GetValueOrDefault(StatusCode.OK));
            bool serving;
            try
            {
                var health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(5));
                serving = health.Status == HealthCheckResponse.Types.ServingStatus.Serving;
            }
            catch (RpcException)
            {
                serving = false;
            }
            results.Add(new FuzzResult(resource, authenticated, cases, cases - improper.Count, ok, improper, serving, statuses));
        }
        return results;
    }

    /// <summary>One line per RPC: its cases and the statuses they got.</summary>
    public static IEnumerable<string> Lines(IEnumerable<FuzzResult> results) =>
        results.SelectMany(r => r.PerRpc.Select(m =>
            $"{r.Service}/{m.Key} ({(r.Authenticated ? "with the token" : "no token")}): {m.Value.Values.Sum()} cases, " +
            string.Join(", ", m.Value.OrderByDescending(s => s.Value).Select(s => $"{s.Key} {s.Value}"))));
}
