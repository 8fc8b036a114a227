namespace Platform.ProcessControl;

/// <summary>How a process ended: an exit code, or the signal that ended it, or unknown (not our child).</summary>
public readonly record struct ExitStatus(int? Code, int? Signal)
{
    /// <summary>The process was not our child (re-adopted after a restart): only its parent could read its status.</summary>
    public static ExitStatus Unknown { get; } = new(null, null);

    public bool IsKnown => Code is not null || Signal is not null;

    public override string ToString() =>
        Code is { } code ? $"exit code {code}" : Signal is { } signal ? $"signal {signal}" : "unknown exit status";
}
