using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;

namespace Platform.ServiceDefaults;

/// <summary>
/// Errors at the gRPC edge with the rich details of google.rpc (docs/architecture.md §5): validation failures carry a
/// BadRequest with one violation per field, so a client can show which field was wrong and why.
/// </summary>
public static class GrpcErrors
{
    public static RpcException InvalidArgument(IReadOnlyCollection<BadRequest.Types.FieldViolation> violations)
    {
        var message = string.Join("; ", violations.Select(v => $"{v.Field}: {v.Description}"));
        return new Google.Rpc.Status
        {
            Code = (int)Code.InvalidArgument,
            Message = message,
            Details = { Any.Pack(new BadRequest { FieldViolations = { violations } }) },
        }.ToRpcException();
    }

    public static RpcException InvalidArgument(string field, string description) =>
        InvalidArgument([new BadRequest.Types.FieldViolation { Field = field, Description = description }]);

    public static RpcException NotFound(string resourceType, string name) =>
        new Google.Rpc.Status
        {
            Code = (int)Code.NotFound,
            Message = $"{resourceType} '{name}' was not found",
            Details = { Any.Pack(new ResourceInfo { ResourceType = resourceType, ResourceName = name }) },
        }.ToRpcException();

    public static RpcException Status(StatusCode code, string message) => new(new Grpc.Core.Status(code, message));
}

/// <summary>Collects field violations of one request; throws them all at once.</summary>
public sealed class Violations
{
    private readonly List<BadRequest.Types.FieldViolation> _violations = [];

    public bool Any => _violations.Count > 0;

    public void Add(string field, string description) =>
        _violations.Add(new BadRequest.Types.FieldViolation { Field = field, Description = description });

    /// <summary>"field: description; field: description".</summary>
    public override string ToString() => string.Join("; ", _violations.Select(v => $"{v.Field}: {v.Description}"));

    public void ThrowIfAny()
    {
        if (Any) throw GrpcErrors.InvalidArgument(_violations);
    }
}
