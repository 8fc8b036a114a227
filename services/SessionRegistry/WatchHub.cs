using System.Threading.Channels;
using Grpc.Core;
using Platform.Registry.V1;
using Platform.ServiceDefaults;

namespace Platform.SessionRegistry;

/// <summary>
/// Fans committed events out to watchers. Keeps a bounded history so a watcher can resume from a revision with no
/// gap and no duplicate. Publishing never blocks: each watcher has a bounded buffer, and a watcher that falls that
/// far behind is cut off (RESOURCE_EXHAUSTED) and resumes from its last revision, without slowing anyone else.
/// </summary>
public sealed class WatchHub(int historyCapacity, int watcherBuffer)
{
    private readonly Lock _lock = new();
    private readonly Queue<SessionEvent> _history = new();
    private readonly HashSet<Watcher> _watchers = [];
    private long _revision;
    private bool _historyComplete = true;

    public long Revision
    {
        get { lock (_lock) return _revision; }
    }

    public int WatcherCount
    {
        get { lock (_lock) return _watchers.Count; }
    }

    /// <summary>Seeds the history at start-up with the store's recent events.</summary>
    public void Seed(long revision, IEnumerable<SessionEvent> recent)
    {
        lock (_lock)
        {
            _revision = revision;
            foreach (var e in recent) Remember(e);
            _historyComplete = _history.Count == 0 ? revision == 0 : _history.Peek().Revision == 1;
        }
    }

    /// <summary>Publishes committed events, in revision order.</summary>
    public void Publish(IReadOnlyList<SessionEvent> events)
    {
        if (events.Count == 0) return;
        lock (_lock)
        {
            foreach (var e in events)
            {
                _revision = e.Revision;
                Remember(e);
                foreach (var watcher in _watchers)
                {
                    if (!watcher.Offer(e)) _overflowed.Add(watcher);
                }
            }

            foreach (var watcher in _overflowed)
            {
                _watchers.Remove(watcher);
                watcher.Cut(PlatformException.Exhausted($"watcher fell more than {watcherBuffer} events behind; resume from revision {watcher.LastRevision}"));
            }
            _overflowed.Clear();
        }
    }

    private readonly List<Watcher> _overflowed = [];

    private void Remember(SessionEvent e)
    {
        _history.Enqueue(e);
        while (_history.Count > historyCapacity)
        {
            _history.Dequeue();
            _historyComplete = false;
        }
    }

    /// <summary>
    /// Subscribes from a revision: the events after it are queued first, then live ones, atomically (no gap, no
    /// duplicate). <paramref name="fromRevision"/> 0 means from now. Throws OUT_OF_RANGE when the history no
    /// longer reaches back that far.
    /// </summary>
    public Watcher Subscribe(long fromRevision, string workload)
    {
        lock (_lock)
        {
            if (fromRevision > _revision)
                throw PlatformException.OutOfRange($"revision {fromRevision} is ahead of the store (at {_revision}); list sessions and watch from the list's revision");
            var watcher = new Watcher(this, workload, watcherBuffer, fromRevision == 0 ? _revision : fromRevision);
            if (fromRevision > 0 && fromRevision < _revision)
            {
                var oldest = _history.Count > 0 ? _history.Peek().Revision : _revision + 1;
                if (fromRevision + 1 < oldest && !_historyComplete)
                    throw PlatformException.OutOfRange($"revision {fromRevision} is older than the kept history (oldest {oldest - 1}); list sessions and watch from the list's revision");
                foreach (var e in _history)
                {
                    if (e.Revision > fromRevision && !watcher.Offer(e))
                        throw PlatformException.OutOfRange($"more than {watcherBuffer} events after revision {fromRevision}; list sessions and watch from the list's revision");
                }
            }
            _watchers.Add(watcher);
            return watcher;
        }
    }

    internal void Unsubscribe(Watcher watcher)
    {
        lock (_lock) _watchers.Remove(watcher);
    }

    /// <summary>One watch stream's buffer.</summary>
    public sealed class Watcher : IDisposable
    {
        private readonly WatchHub _hub;
        private readonly string _workload;
        private readonly Channel<SessionEvent> _channel;

        internal Watcher(WatchHub hub, string workload, int capacity, long revision)
        {
            _hub = hub;
            _workload = workload;
            LastRevision = revision;
            _channel = Channel.CreateBounded<SessionEvent>(new BoundedChannelOptions(capacity)
            {
                SingleReader = true,
                SingleWriter = true,
                FullMode = BoundedChannelFullMode.Wait,
            });
        }

        /// <summary>Revision of the last event offered (delivered or filtered out).</summary>
        public long LastRevision { get; private set; }

        public ChannelReader<SessionEvent> Events => _channel.Reader;

        internal bool Offer(SessionEvent e)
        {
            if (_workload.Length > 0 && e.Session.Workload != _workload)
            {
                LastRevision = e.Revision;
                return true;
            }
            if (!_channel.Writer.TryWrite(e)) return false;
            LastRevision = e.Revision;
            return true;
        }

        internal void Cut(Exception error) => _channel.Writer.TryComplete(error);

        public void Dispose()
        {
            _hub.Unsubscribe(this);
            _channel.Writer.TryComplete();
        }
    }
}
