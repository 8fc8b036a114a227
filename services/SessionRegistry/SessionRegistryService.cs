namespace Platform.SessionRegistry;

/// <summary>
/// The SessionRegistry's gRPC surface (platform.registry.v1).
/// Every RPC of the contract is inherited from the generated base, which answers UNIMPLEMENTED until the
/// service's own issue builds it.
/// </summary>
public sealed class SessionRegistryService : Platform.Registry.V1.SessionRegistry.SessionRegistryBase
{
}
