using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Hosting;

namespace Platform.ServiceDefaults;

/// <summary>
/// Ends long-lived streaming calls (watches, log follows) when the service begins to stop. Kestrel's graceful shutdown
/// otherwise waits for them for its whole timeout (30 s): a watcher would hold a stopping service that long. The stream
/// is reset, and the client sees UNAVAILABLE/CANCELLED and reconnects elsewhere or later, as watchers do.
/// </summary>
public sealed class StreamShutdownInterceptor(IHostApplicationLifetime lifetime) : Interceptor
{
    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using var _ = lifetime.ApplicationStopping.Register(Abort, context);
        await continuation(request, responseStream, context);
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using var _ = lifetime.ApplicationStopping.Register(Abort, context);
        await continuation(requestStream, responseStream, context);
    }

    private static void Abort(object? state) => ((ServerCallContext)state!).GetHttpContext().Abort();
}
