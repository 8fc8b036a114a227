using Google.Protobuf.WellKnownTypes;

namespace Platform.ServiceDefaults;

/// <summary>google.protobuf.Duration as the services accept it: normalized (what <c>ToTimeSpan</c> can convert; it
/// throws on anything else, which would surface as UNKNOWN instead of a precise INVALID_ARGUMENT).</summary>
public static class Durations
{
    /// <summary>The message every service gives for a duration that is not one.</summary>
    public const string NotADuration = "is not a valid duration (seconds within ±315,576,000,000, nanos within ±999,999,999, both of one sign)";

    public static bool IsValid(Duration d) =>
        d.Seconds is >= -Duration.MaxSeconds and <= Duration.MaxSeconds &&
        d.Nanos is > -Duration.NanosecondsPerSecond and < Duration.NanosecondsPerSecond &&
        !(d.Seconds < 0 && d.Nanos > 0) && !(d.Seconds > 0 && d.Nanos < 0);
}
