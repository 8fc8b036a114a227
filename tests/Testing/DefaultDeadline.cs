using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Platform.Testing;

/// <summary>
/// Gives every unary call that names no deadline one of <paramref name="limit"/>: a service that never answers fails
/// its test with DEADLINE_EXCEEDED at the call that waited, instead of hanging the test run. Streams keep theirs (a
/// watch is meant to stay open; the tests bound their reads with a token).
/// </summary>
public sealed class DefaultDeadline(TimeSpan limit) : Interceptor
{
    public static readonly DefaultDeadline Minute = new(TimeSpan.FromMinutes(1));

    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request,
        ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation) =>
        continuation(request, Bounded(context));

    public override TResponse BlockingUnaryCall<TRequest, TResponse>(TRequest request,
        ClientInterceptorContext<TRequest, TResponse> context, BlockingUnaryCallContinuation<TRequest, TResponse> continuation) =>
        continuation(request, Bounded(context));

    private ClientInterceptorContext<TRequest, TResponse> Bounded<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context)
        where TRequest : class where TResponse : class =>
        context.Options.Deadline is null ? new(context.Method, context.Host, context.Options.WithDeadline(DateTime.UtcNow + limit)) : context;
}
