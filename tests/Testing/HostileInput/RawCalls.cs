using CsCheck;
using Google.Protobuf.Reflection;
using Grpc.Core;

namespace Platform.Testing.HostileInput;

/// <summary>Calls of any RPC with raw bytes (what a hostile client can send), and what counts as a proper answer.</summary>
public static class RawCalls
{
    private static readonly Marshaller<byte[]> Raw = Marshallers.Create(b => b, b => b);

    /// <summary>
    /// Not a proper answer: a handler threw what nobody mapped (INTERNAL, UNKNOWN, DATA_LOSS), or, the service being
    /// up, an answer that did not reach the caller (UNAVAILABLE), as when an error echoed a huge input into trailers
    /// over the client's 64 KiB header limit.
    /// </summary>
    public static readonly StatusCode[] Improper = [StatusCode.Internal, StatusCode.Unknown, StatusCode.DataLoss, StatusCode.Unavailable];

    /// <summary>The four services' contracts, by the AppHost's resource names.</summary>
    public static readonly (string Resource, ServiceDescriptor Service)[] Services =
    [
        ("registry", Registry.V1.RegistryReflection.Descriptor.Services[0]),
        ("launcher", Launcher.V1.LauncherReflection.Descriptor.Services[0]),
        ("monitor", Monitor.V1.MonitorReflection.Descriptor.Services[0]),
        ("supervisor", Supervisor.V1.SupervisorReflection.Descriptor.Services[0]),
    ];

    public static bool IsStreaming(MethodDescriptor method) => method.IsClientStreaming || method.IsServerStreaming;

    /// <summary>One call with raw bytes; a stream is read (or written) once, with a short deadline: a valid watch waits.</summary>
    public static async Task<(StatusCode Status, string Detail)> CallAsync(CallInvoker invoker, ServiceDescriptor service, MethodDescriptor method, byte[] request)
    {
        var type = (method.IsClientStreaming, method.IsServerStreaming) switch
        {
            (false, false) => MethodType.Unary,
            (false, true) => MethodType.ServerStreaming,
            (true, false) => MethodType.ClientStreaming,
            _ => MethodType.DuplexStreaming,
        };
        var call = new Method<byte[], byte[]>(type, service.FullName, method.Name, Raw, Raw);
        var options = new CallOptions(deadline: DateTime.UtcNow + (IsStreaming(method) ? TimeSpan.FromMilliseconds(300) : TimeSpan.FromSeconds(10)));
        try
        {
            switch (type)
            {
                case MethodType.Unary:
                    await invoker.AsyncUnaryCall(call, null, options, request).ResponseAsync;
                    break;
                case MethodType.ServerStreaming:
                    using (var stream = invoker.AsyncServerStreamingCall(call, null, options, request))
                        await stream.ResponseStream.MoveNext(CancellationToken.None);
                    break;
                case MethodType.ClientStreaming:
                    using (var stream = invoker.AsyncClientStreamingCall(call, null, options))
                    {
                        await stream.RequestStream.WriteAsync(request);
                        await stream.RequestStream.CompleteAsync();
                        await stream.ResponseAsync;
                    }
                    break;
                default:
                    using (var stream = invoker.AsyncDuplexStreamingCall(call, null, options))
                    {
                        await stream.RequestStream.WriteAsync(request);
                        await stream.RequestStream.CompleteAsync();
                        await stream.ResponseStream.MoveNext(CancellationToken.None);
                    }
                    break;
            }
            return (StatusCode.OK, "");
        }
        catch (RpcException e)
        {
            return (e.StatusCode, e.Status.Detail);
        }
    }

    /// <summary>
    /// Random and boundary messages to every RPC of <paramref name="service"/> (<paramref name="unary"/> cases each,
    /// <paramref name="streaming"/> for a stream); the statuses answered, per RPC, and the improper answers in words.
    /// </summary>
    public static async Task<(Dictionary<string, Dictionary<StatusCode, int>> Statuses, List<string> Improper)> FuzzAsync(
        CallInvoker invoker, ServiceDescriptor service, int unary, int streaming)
    {
        var statuses = new Dictionary<string, Dictionary<StatusCode, int>>();
        var improper = new List<string>();
        foreach (var method in service.Methods)
        {
            var counts = statuses[method.Name] = [];
            await RandomMessages.Of(method.InputType).SampleAsync(async request =>
            {
                var (status, detail) = await CallAsync(invoker, service, method, request);
                counts[status] = counts.GetValueOrDefault(status) + 1;
                if (Improper.Contains(status)) improper.Add($"{service.Name}/{method.Name} answered {status}: {detail}");
            }, iter: IsStreaming(method) ? streaming : unary, threads: 1);
        }
        return (statuses, improper);
    }
}
