namespace Platform.Launcher;

/// <summary>
/// The Launcher's gRPC surface (platform.launcher.v1).
/// Every RPC of the contract is inherited from the generated base, which answers UNIMPLEMENTED until the
/// service's own issue builds it.
/// </summary>
public sealed class LauncherService : Platform.Launcher.V1.Launcher.LauncherBase
{
}
