
namespace Platform.ServiceDefaults;

/// <summary>Watch streams a service serves at once (one per service, registered by AddServiceDefaults): one more than
/// its setting allows is RESOURCE_EXHAUSTED naming the setting.</summary>
public sealed class WatcherLimit
{
    private int _open;

    public int Open => Volatile.Read(ref _open);

    /// <summary>A place for one watcher, given back when disposed.</summary>
    public IDisposable Enter(int max, string setting)
    {
        if (Interlocked.Increment(ref _open) > max)
        {
            Interlocked.Decrement(ref _open);
            throw PlatformException.Exhausted($"{max} watchers are open, the most this service serves ({setting}); close one or retry later");
        }
        return new Place(this);
    }

    private sealed class Place(WatcherLimit limit) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0) Interlocked.Decrement(ref limit._open);
        }
    }
}
