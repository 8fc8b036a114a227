using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Platform.ServiceDefaults;

/// <summary>
/// The one place where the services' failures become gRPC statuses: a <see cref="PlatformException"/> thrown by a
/// handler or an engine (also while a stream is being written) is answered with its status and details.
/// </summary>
public sealed class ErrorInterceptor : Interceptor
{
    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation) =>
        Mapped(() => continuation(request, context));

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation) =>
        Mapped(() => continuation(requestStream, context));

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation) =>
        Mapped(async () =>
        {
            await continuation(request, responseStream, context);
            return true;
        });

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation) =>
        Mapped(async () =>
        {
            await continuation(requestStream, responseStream, context);
            return true;
        });

    private static async Task<T> Mapped<T>(Func<Task<T>> call)
    {
        try
        {
            return await call();
        }
        catch (PlatformException e)
        {
            throw e.ToRpcException();
        }
    }
}
