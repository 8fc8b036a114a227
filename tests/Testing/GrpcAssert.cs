using Grpc.Core;
using Xunit;

namespace Platform.Testing;

/// <summary>Assertions about the gRPC statuses the services answer with.</summary>
public static class GrpcAssert
{
    /// <summary>
    /// The call fails with <paramref name="expected"/>, and a message a person can read (containing
    /// <paramref name="detail"/> when given); returns the error for further checks.
    /// </summary>
    public static async Task<RpcException> StatusAsync(StatusCode expected, Task call, string? detail = null)
    {
        var error = await Assert.ThrowsAsync<RpcException>(() => call);
        Assert.Equal(expected, error.StatusCode);
        Assert.False(string.IsNullOrWhiteSpace(error.Status.Detail), $"a {expected} without a message");
        if (detail is not null) Assert.Contains(detail, error.Status.Detail);
        return error;
    }
}
