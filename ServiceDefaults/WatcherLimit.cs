namespace Platform.ServiceDefaults;

/// <summary>How many of something a service does at once (watch streams, launches being started): one more than its
/// setting allows is RESOURCE_EXHAUSTED naming the setting.</summary>
public class ConcurrencyLimit(string what)
{
    private int _open;

    /// <summary>A place for one more, given back when disposed.</summary>
    public IDisposable Enter(int max, string setting)
    {
        if (Interlocked.Increment(ref _open) > max)
        {
            Interlocked.Decrement(ref _open);
            throw PlatformException.Exhausted($"{max} {what} at once already, the most this service allows ({setting}); retry later");
        }
        return new Place(this);
    }

    private sealed class Place(ConcurrencyLimit limit) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0) Interlocked.Decrement(ref limit._open);
        }
    }
}

/// <summary>The watch streams a service serves (one per service, registered by AddServiceDefaults).</summary>
public sealed class WatcherLimit() : ConcurrencyLimit("watchers are open");
