namespace Platform.AgentMonitor;

/// <summary>
/// The AgentMonitor's gRPC surface (platform.monitor.v1).
/// Every RPC of the contract is inherited from the generated base, which answers UNIMPLEMENTED until the
/// service's own issue builds it.
/// </summary>
public sealed class AgentMonitorService : Platform.Monitor.V1.AgentMonitor.AgentMonitorBase
{
}
