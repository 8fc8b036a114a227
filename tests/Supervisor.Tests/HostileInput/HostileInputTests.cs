using CsCheck;
using Google.Protobuf.Reflection;
using Grpc.Core;
using Grpc.Net.Client;
using Platform.Launcher.V1;
using Platform.Supervisor.V1;
using Platform.Testing.HostileInput;

namespace Platform.Supervisor.Tests.HostileInput;

/// <summary>
/// Every RPC of the four services, each its real server on loopback, sent random and boundary messages
/// (Platform.Testing's RandomMessages) as raw bytes: the answer is always a proper status (never INTERNAL, UNKNOWN or
/// DATA_LOSS, which would mean a handler threw something nobody mapped, nor UNAVAILABLE from a service that is up), a
/// rejected launch starts no process and
/// leaves no directory, a rejected workload is not stored, and every service is still serving afterwards.
/// </summary>
public sealed class HostileInputTests : SupervisorTestBase
{
    [Fact]
    public async Task Every_rpc_answers_random_and_boundary_messages_with_a_proper_status_and_does_nothing_for_a_rejected_one()
    {
        var services = new (ServiceDescriptor Service, string Address)[]
        {
            (Platform.Registry.V1.RegistryReflection.Descriptor.Services[0], Registry.Address),
            (LauncherReflection.Descriptor.Services[0], LauncherHost.Address),
            (Monitor.V1.MonitorReflection.Descriptor.Services[0], MonitorHost.Address),
            (SupervisorReflection.Descriptor.Services[0], SupervisorProcess.GrpcUrl),
        };
        var outputs = Path.Combine(DataDirectory, "launcher", "instances");
        var report = new List<string>();
        foreach (var (service, address) in services)
        {
            using var channel = GrpcChannel.ForAddress(address);
            var invoker = channel.CreateCallInvoker();
            foreach (var method in service.Methods)
            {
                var streaming = RawCalls.IsStreaming(method);
                var statuses = new Dictionary<StatusCode, int>();
                await RandomMessages.Of(method.InputType).SampleAsync(async request =>
                {
                    var launch = method.Name == "Launch";
                    var apply = method.Name == "ApplyWorkload";
                    var before = launch ? (await InstancesAsync(), Directory.Exists(outputs) ? Directory.GetDirectories(outputs).Length : 0) : default;
                    var workloads = apply ? await WorkloadsAsync() : 0;

                    var (status, detail) = await RawCalls.CallAsync(invoker, service, method, request);

                    lock (statuses) statuses[status] = statuses.GetValueOrDefault(status) + 1;
                    Assert.False(RawCalls.Improper.Contains(status), $"{service.FullName}/{method.Name} answered {status}: {detail}");
                    if (launch && status != StatusCode.OK)
                        Assert.Equal(before, (await InstancesAsync(), Directory.Exists(outputs) ? Directory.GetDirectories(outputs).Length : 0));
                    if (apply && status != StatusCode.OK) Assert.Equal(workloads, await WorkloadsAsync());
                }, iter: streaming ? 25 : 150, threads: 1);
                report.Add($"{service.Name}/{method.Name}: {statuses.Values.Sum()} cases, {string.Join(", ", statuses.OrderByDescending(s => s.Value).Select(s => $"{s.Key} {s.Value}"))}");
            }
        }
        foreach (var line in report) Console.WriteLine(line);

        // Still serving, every one of them.
        foreach (var (service, address) in services)
        {
            using var channel = GrpcChannel.ForAddress(address);
            var health = await new Grpc.Health.V1.Health.HealthClient(channel).CheckAsync(new Grpc.Health.V1.HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(5));
            Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        }
    }

    private async Task<int> InstancesAsync() =>
        (await LauncherClient.ListInstancesAsync(new ListInstancesRequest { PageSize = 1000 })).Instances.Count;

    private async Task<int> WorkloadsAsync() =>
        (await Client.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000 })).Workloads.Count;
}
