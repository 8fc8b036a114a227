namespace Platform.Supervisor;

/// <summary>
/// The Supervisor's gRPC surface (platform.supervisor.v1).
/// Every RPC of the contract is inherited from the generated base, which answers UNIMPLEMENTED until the
/// service's own issue builds it.
/// </summary>
public sealed class SupervisorService : Platform.Supervisor.V1.Supervisor.SupervisorBase
{
}
