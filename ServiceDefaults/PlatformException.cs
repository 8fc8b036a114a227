using Google.Rpc;
using Grpc.Core;

namespace Platform.ServiceDefaults;

/// <summary>What kind of failure a <see cref="PlatformException"/> is; each maps to one gRPC status.</summary>
public enum ErrorKind
{
    /// <summary>The caller's request is wrong (INVALID_ARGUMENT, with one violation per field).</summary>
    Invalid,
    /// <summary>What the request names does not exist (NOT_FOUND).</summary>
    NotFound,
    /// <summary>The request conflicts with the current state (FAILED_PRECONDITION).</summary>
    Conflict,
    /// <summary>The caller may not do this here (PERMISSION_DENIED).</summary>
    PermissionDenied,
    /// <summary>A resume point or position outside what is kept (OUT_OF_RANGE).</summary>
    OutOfRange,
    /// <summary>The caller fell behind or asked for too much (RESOURCE_EXHAUSTED).</summary>
    Exhausted,
    /// <summary>The service or one it depends on cannot do it now; a retry later may succeed (UNAVAILABLE).</summary>
    Unavailable,
    /// <summary>Something did not answer in time (DEADLINE_EXCEEDED).</summary>
    TimedOut,
}

/// <summary>
/// A failure the services' engines raise in their own terms; <see cref="ErrorInterceptor"/> turns it into the gRPC
/// status at the edge (with google.rpc details: a BadRequest for <see cref="ErrorKind.Invalid"/>, a ResourceInfo for
/// <see cref="ErrorKind.NotFound"/>). Engines never build an <see cref="RpcException"/> themselves.
/// </summary>
public sealed class PlatformException : Exception
{
    private PlatformException(ErrorKind kind, string message, IReadOnlyList<BadRequest.Types.FieldViolation>? violations = null, ResourceInfo? resource = null)
        : base(message)
    {
        Kind = kind;
        Violations = violations ?? [];
        Resource = resource;
    }

    public ErrorKind Kind { get; }

    public IReadOnlyList<BadRequest.Types.FieldViolation> Violations { get; }

    public ResourceInfo? Resource { get; }

    public static PlatformException Invalid(IReadOnlyList<BadRequest.Types.FieldViolation> violations) =>
        new(ErrorKind.Invalid, ServiceDefaults.Violations.Describe(violations), violations);

    public static PlatformException Invalid(string field, string description) =>
        Invalid([new BadRequest.Types.FieldViolation { Field = field, Description = description }]);

    /// <summary>A resource that does not exist: "<paramref name="resourceType"/> 'name' was not found", or the message given.</summary>
    public static PlatformException NotFound(string resourceType, string name, string? message = null) =>
        new(ErrorKind.NotFound, message ?? $"{resourceType} '{name}' was not found", resource: new ResourceInfo { ResourceType = resourceType, ResourceName = name });

    /// <summary>Something missing that is not a resource of this service (a file, an executable).</summary>
    public static PlatformException NotFound(string message) => new(ErrorKind.NotFound, message);

    public static PlatformException Conflict(string message) => new(ErrorKind.Conflict, message);

    public static PlatformException PermissionDenied(string message) => new(ErrorKind.PermissionDenied, message);

    public static PlatformException OutOfRange(string message) => new(ErrorKind.OutOfRange, message);

    public static PlatformException Exhausted(string message) => new(ErrorKind.Exhausted, message);

    public static PlatformException Unavailable(string message) => new(ErrorKind.Unavailable, message);

    public static PlatformException TimedOut(string message) => new(ErrorKind.TimedOut, message);

    /// <summary>The same kind of failure as a status another service answered (its refusal passed on with our words).</summary>
    public static PlatformException Like(StatusCode code, string message) => code switch
    {
        StatusCode.InvalidArgument => Invalid("", message),
        StatusCode.NotFound => NotFound(message),
        StatusCode.FailedPrecondition or StatusCode.AlreadyExists or StatusCode.Aborted => Conflict(message),
        StatusCode.PermissionDenied or StatusCode.Unauthenticated => PermissionDenied(message),
        StatusCode.OutOfRange => OutOfRange(message),
        StatusCode.ResourceExhausted => Exhausted(message),
        StatusCode.DeadlineExceeded => TimedOut(message),
        _ => Unavailable(message),
    };

    public StatusCode StatusCode => Kind switch
    {
        ErrorKind.Invalid => StatusCode.InvalidArgument,
        ErrorKind.NotFound => StatusCode.NotFound,
        ErrorKind.Conflict => StatusCode.FailedPrecondition,
        ErrorKind.PermissionDenied => StatusCode.PermissionDenied,
        ErrorKind.OutOfRange => StatusCode.OutOfRange,
        ErrorKind.Exhausted => StatusCode.ResourceExhausted,
        ErrorKind.TimedOut => StatusCode.DeadlineExceeded,
        _ => StatusCode.Unavailable,
    };

    /// <summary>
    /// The gRPC status this failure is answered with, clipped to what fits in HTTP/2 trailers: a message or a detail that echoes a huge input (a 70,000
    /// character id, a thousand bad labels) would make the trailers exceed the client's 64 KiB header limit, and the
    /// caller would see UNAVAILABLE instead of the reason.
    /// </summary>
    public RpcException ToRpcException()
    {
        var status = new Google.Rpc.Status { Code = (int)StatusCode, Message = Clip(Message, 1000) };
        if (Kind == ErrorKind.Invalid && Violations.Any(v => v.Field.Length > 0))
        {
            var request = new BadRequest();
            foreach (var v in Violations.Take(10))
                request.FieldViolations.Add(new BadRequest.Types.FieldViolation { Field = Clip(v.Field, 100), Description = Clip(v.Description, 200) });
            status.Details.Add(Google.Protobuf.WellKnownTypes.Any.Pack(request));
        }
        if (Resource is not null)
            status.Details.Add(Google.Protobuf.WellKnownTypes.Any.Pack(new ResourceInfo { ResourceType = Resource.ResourceType, ResourceName = Clip(Resource.ResourceName, 200) }));
        return status.ToRpcException();
    }

    private static string Clip(string text, int length)
    {
        if (text.Length <= length) return text;
        if (char.IsHighSurrogate(text[length - 1])) length--; // never half a character
        return $"{text[..length]}... ({text.Length - length} more characters)";
    }
}
