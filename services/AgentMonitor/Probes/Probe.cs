using System.Text.RegularExpressions;

namespace Platform.AgentMonitor.Probes;

public enum ProbeOutcome
{
    /// <summary>The agent answered as alive.</summary>
    Alive,
    /// <summary>The agent is dead, stopped, unreachable or reported itself unhealthy.</summary>
    Failed,
    /// <summary>The probe itself could not run; says nothing about the agent.</summary>
    Unknown,
}

/// <summary>One observation. Activity probes also say when the agent last produced output and whether an idle pattern
/// matched.</summary>
public readonly record struct ProbeResult(ProbeOutcome Outcome, string Detail)
{
    public DateTimeOffset? LastActivity { get; init; }
    /// <summary>The line an idle pattern matched, if one did.</summary>
    public string? IdleMatch { get; init; }

    public static ProbeResult Alive(string detail) => new(ProbeOutcome.Alive, detail);
    public static ProbeResult Failed(string detail) => new(ProbeOutcome.Failed, detail);
    public static ProbeResult Unknown(string detail) => new(ProbeOutcome.Unknown, detail);
}

/// <summary>A probe of one target; one instance per target, so it may keep state between runs (never two runs at once).</summary>
public interface IProbe : IDisposable
{
    Task<ProbeResult> RunAsync(CancellationToken cancellationToken);
}

/// <summary>A probe whose work may block its thread (file reads); the engine runs it on a work item of its own.</summary>
public interface IBlockingProbe : IProbe;

/// <summary>What a probe may ask of the engine.</summary>
public sealed class ProbeContext(TargetSpec spec, TimeProvider time, Action probeNow)
{
    public TargetSpec Spec { get; } = spec;
    public TimeProvider Time { get; } = time;
    /// <summary>Runs the target's probe again as soon as a slot is free (activity seen between probes).</summary>
    public Action ProbeNow { get; } = probeNow;
}

internal static class Patterns
{
    /// <summary>The last <paramref name="count"/> non-blank lines of <paramref name="text"/>, oldest first.</summary>
    public static List<string> LastLines(string text, int count)
    {
        var lines = new List<string>(count);
        var end = text.Length;
        while (end > 0 && lines.Count < count)
        {
            var start = text.LastIndexOf('\n', end - 1) + 1;
            var line = text[start..end].TrimEnd('\r', ' ', '\t');
            if (line.Trim().Length > 0) lines.Add(line);
            end = start - 1;
            if (end < 0) break;
        }
        lines.Reverse();
        return lines;
    }

    /// <summary>The first line (newest first) a pattern matches, or null. A match that runs out of time counts as none.</summary>
    public static (Regex Pattern, string Line)? Match(Regex[] patterns, List<string> lines)
    {
        for (var i = lines.Count - 1; i >= 0; i--)
        {
            foreach (var pattern in patterns)
            {
                try
                {
                    if (pattern.IsMatch(lines[i])) return (pattern, lines[i]);
                }
                catch (RegexMatchTimeoutException)
                {
                }
            }
        }
        return null;
    }

    /// <summary>Applies the patterns to the last lines: unhealthy first, then idle.</summary>
    public static ProbeResult Classify(TargetSpec spec, List<string> lines, DateTimeOffset lastActivity, string aliveDetail)
    {
        if (spec.UnhealthyPatterns.Length > 0 && Match(spec.UnhealthyPatterns, lines) is { } bad)
            return ProbeResult.Failed($"unhealthy pattern /{bad.Pattern}/ matched: {bad.Line}") with { LastActivity = lastActivity };
        var idle = spec.IdlePatterns.Length > 0 ? Match(spec.IdlePatterns, lines) : null;
        return ProbeResult.Alive(aliveDetail) with { LastActivity = lastActivity, IdleMatch = idle?.Line };
    }
}
