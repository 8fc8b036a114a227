using Grpc.Core;

namespace Platform.Cli;

/// <summary>What every command shares: the connection, the output, and calls whose failures become one line.</summary>
public sealed class Context(Connection connection, Output output, Format format, CancellationToken cancellation)
{
    public static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(15);

    public Connection Platform { get; } = connection;

    public Output Out { get; } = output;

    public Format Format { get; } = format;

    public CancellationToken Cancellation { get; } = cancellation;

    public DateTime Deadline => DateTime.UtcNow + CallTimeout;

    /// <summary>A unary call to <paramref name="service"/>; a gRPC error becomes a <see cref="CliException"/>.</summary>
    public async Task<T> Ask<T>(string service, Func<Task<T>> call)
    {
        try
        {
            return await call();
        }
        catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled || !Cancellation.IsCancellationRequested)
        {
            var (code, message) = Failures.Describe(e, service, Platform);
            throw new CliException(code, message);
        }
    }

    /// <summary>The same call, null when the answer is NOT_FOUND.</summary>
    public async Task<T?> Find<T>(string service, Func<Task<T>> call) where T : class
    {
        try
        {
            return await Ask(service, call);
        }
        catch (CliException e) when (e.ExitCode == ExitCode.NotFound)
        {
            return null;
        }
    }
}
