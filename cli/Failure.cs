using Grpc.Core;

namespace Platform.Cli;

/// <summary>platformctl's exit codes.</summary>
public static class ExitCode
{
    public const int Ok = 0;
    /// <summary>The operation failed (refused, invalid input, a server error).</summary>
    public const int Failed = 1;
    /// <summary>The command line is wrong.</summary>
    public const int Usage = 2;
    /// <summary>The platform (or one of its services) cannot be reached.</summary>
    public const int Unreachable = 3;
    /// <summary>What was named does not exist.</summary>
    public const int NotFound = 4;
}

/// <summary>A failure said in one line, with the exit code it ends the command with.</summary>
public sealed class CliException(int exitCode, string message) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}

public static class Failures
{
    /// <summary>A gRPC error as one line a person can act on, and its exit code.</summary>
    public static (int Code, string Message) Describe(RpcException e, string service, Connection? connection)
    {
        var detail = e.Status.Detail;
        return e.StatusCode switch
        {
            StatusCode.Unavailable or StatusCode.DeadlineExceeded when IsConnectFailure(e) => (ExitCode.Unreachable,
                $"cannot reach the {service} at {Where(service, connection)}: {Inner(e)}. Is the platform running? Start it with 'dotnet run --project AppHost', or set PLATFORM_ENDPOINT"),
            StatusCode.Unavailable => (ExitCode.Unreachable, $"the {service} is unavailable: {detail}"),
            StatusCode.DeadlineExceeded => (ExitCode.Unreachable, $"the {service} did not answer in time: {detail}"),
            StatusCode.NotFound => (ExitCode.NotFound, detail),
            StatusCode.Unauthenticated => (ExitCode.Failed,
                $"not authenticated: {detail}. platformctl sends the token from --token, PLATFORM_TOKEN or the AppHost's apphost.json"),
            StatusCode.PermissionDenied => (ExitCode.Failed, $"permission denied: {detail}"),
            StatusCode.InvalidArgument => (ExitCode.Failed, $"invalid: {detail}"),
            StatusCode.FailedPrecondition => (ExitCode.Failed, $"not now: {detail}"),
            StatusCode.AlreadyExists => (ExitCode.Failed, $"already exists: {detail}"),
            StatusCode.Aborted => (ExitCode.Failed, $"conflict: {detail}"),
            StatusCode.ResourceExhausted => (ExitCode.Failed, $"over a limit: {detail}"),
            StatusCode.Unimplemented => (ExitCode.Failed, $"the {service} does not implement this call (an older version?): {detail}"),
            _ => (ExitCode.Failed, $"the {service} failed ({e.StatusCode}): {detail}"),
        };
    }

    private static string Where(string service, Connection? connection)
    {
        try { return connection?.Address(service) ?? "?"; }
        catch (CliException) { return "?"; }
    }

    private static bool IsConnectFailure(RpcException e) =>
        e.Status.DebugException is System.Net.Http.HttpRequestException or System.Net.Sockets.SocketException
        || e.Status.DebugException?.InnerException is System.Net.Sockets.SocketException
        || e.Status.Detail.Contains("Error connecting", StringComparison.OrdinalIgnoreCase);

    private static string Inner(RpcException e)
    {
        var inner = e.Status.DebugException;
        while (inner?.InnerException is { } next) inner = next;
        return inner?.Message ?? e.Status.Detail;
    }
}
