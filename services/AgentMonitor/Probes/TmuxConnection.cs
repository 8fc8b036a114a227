using System.Collections.Concurrent;
using Platform.ProcessControl;
using System.Text;

namespace Platform.AgentMonitor.Probes;

/// <summary>
/// One tmux control-mode client (<c>tmux -C</c>) per tmux server. Commands (display-message, capture-pane) go over it
/// and are answered in order (%begin/%end blocks); <c>%output</c> notifications tell, as it happens, which pane
/// printed. tmux sends %output only for windows of the client's own session, so the connection runs in a session of
/// its own (destroyed when the client goes: destroy-unattached) and links every watched pane's window into it;
/// linking does not resize or otherwise change the window for its own sessions.
/// </summary>
public sealed class TmuxConnection : IAsyncDisposable
{
    private readonly SpawnedProcess _process;
    private readonly StreamWriter _input;
    private readonly Lock _writeLock = new();
    private readonly ConcurrentQueue<TaskCompletionSource<List<string>>> _pending = new();
    private readonly ConcurrentDictionary<string, PaneActivity> _panes = new();
    private readonly ConcurrentDictionary<string, Task> _linked = new();
    private readonly TimeProvider _time;
    private readonly Thread _reader;
    private readonly TaskCompletionSource _readerDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile string? _closedReason;

    private sealed class PaneActivity
    {
        public long LastOutputUtcTicks;
        public Action? OnOutput;
    }

    private TmuxConnection(SpawnedProcess process, string sessionName, TimeProvider time)
    {
        _process = process;
        _input = new StreamWriter(process.StandardInput!, new UTF8Encoding(false)) { AutoFlush = false };
        SessionName = sessionName;
        _time = time;
        // One thread per tmux server reads its notifications with blocking reads: cheaper than async reads on a
        // pipe (each would be a thread-pool work item blocked in read()), and there are few servers.
        _reader = new Thread(ReadLoop) { IsBackground = true, Name = "tmux control reader" };
        _reader.Start();
    }

    public string SessionName { get; }
    public bool IsClosed => _closedReason is not null;
    public int Pid => _process.Pid;

    /// <summary>Connects to the server at <paramref name="socketPath"/> (empty: the default server); never starts one.</summary>
    public static async Task<TmuxConnection> ConnectAsync(string tmuxPath, string socketPath, TimeProvider time, CancellationToken cancellationToken)
    {
        var session = $"_platform_monitor_{Environment.ProcessId}_{Guid.NewGuid().ToString("N")[..8]}";
        var args = new List<string>();
        if (socketPath.Length > 0) args.AddRange(["-S", socketPath]);
        // -N: never start a server; a missing server is an error, not a new empty server.
        args.AddRange(["-N", "-C", "new-session", "-s", session, "-x", "80", "-y", "24", "exec sleep infinity"]);
        var environment = System.Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
            .Where(e => (string)e.Key != "TMUX")
            .ToDictionary(e => (string)e.Key, e => (string?)e.Value ?? "");
        SpawnedProcess process;
        try
        {
            process = ChildReaper.Shared.Spawn(new SpawnRequest(tmuxPath, args, environment, Stdout: StdioTarget.Pipe, Stderr: StdioTarget.Pipe) { StdinPipe = true });
        }
        catch (SpawnException e)
        {
            throw new TmuxException(e.Message, serverMissing: false);
        }
        var connection = new TmuxConnection(process, session, time);
        try
        {
            await connection._ready.Task.WaitAsync(TimeSpan.FromSeconds(5), cancellationToken);
            await connection.CommandAsync($"set-option -t '{session}' destroy-unattached on", cancellationToken).WaitAsync(TimeSpan.FromSeconds(5), cancellationToken);
            return connection;
        }
        catch
        {
            var stderr = "";
            try
            {
                await process.Exited.WaitAsync(TimeSpan.FromSeconds(1), cancellationToken);
                using var reader = new StreamReader(process.StandardError!);
                stderr = (await reader.ReadToEndAsync(cancellationToken)).Trim();
            }
            catch (Exception e) when (e is TimeoutException or IOException or OperationCanceledException)
            {
            }
            await connection.DisposeAsync();
            if (stderr.Length > 0)
                throw new TmuxException($"tmux: {stderr}", serverMissing: stderr.Contains("connect", StringComparison.Ordinal) || stderr.Contains("no server", StringComparison.Ordinal));
            if (!cancellationToken.IsCancellationRequested) throw new TmuxException("tmux did not answer its control client within 5 s", serverMissing: false);
            throw;
        }
    }

    /// <summary>Runs one tmux command; returns its output lines, or throws <see cref="TmuxException"/> with tmux's error.</summary>
    public async Task<List<string>> CommandAsync(string command, CancellationToken cancellationToken)
    {
        var reply = new TaskCompletionSource<List<string>>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_writeLock)
        {
            try
            {
                if (_closedReason is { } reason) throw new TmuxException(reason, serverMissing: true);
                _pending.Enqueue(reply);
                // Closed between the check and the enqueue: fail this reply too (Close empties the queue).
                if (_closedReason is { } closed) Close(closed);
                // A short blocking write to a pipe: tmux reads its control client at once.
                _input.Write(command);
                _input.Write('\n');
                _input.Flush();
            }
            catch (IOException e)
            {
                Close($"tmux connection lost: {e.Message}");
            }
        }
        return await reply.Task.WaitAsync(cancellationToken);
    }

    /// <summary>
    /// The pane a target names, or null. tmux's display-message falls back to some other pane for a target that
    /// names a missing window or pane, so the answer is checked against the target: "%id", "session:window.pane",
    /// "session:window" (its active pane), where a window is an index, a name or an @id.
    /// </summary>
    public async Task<PaneInfo?> ResolvePaneAsync(string target, CancellationToken cancellationToken)
    {
        var lines = await CommandAsync($"display-message -p -t '{target}' '#{{pane_id}}\t#{{window_id}}\t#{{pane_dead}}\t#{{session_name}}\t#{{window_index}}\t#{{window_name}}\t#{{pane_index}}\t#{{pane_active}}\t#{{pane_current_command}}'", cancellationToken);
        var f = lines.Count > 0 ? lines[0].Split('\t') : [];
        if (f.Length < 9 || !f[0].StartsWith('%')) return null;
        var pane = new PaneInfo(f[0], f[1], f[2] == "1", f[8]);
        if (target.StartsWith('%')) return target == pane.PaneId ? pane : null;
        var colon = target.IndexOf(':');
        var session = colon < 0 ? target : target[..colon];
        var rest = colon < 0 ? "" : target[(colon + 1)..];
        var dot = rest.LastIndexOf('.');
        var window = dot < 0 ? rest : rest[..dot];
        var paneIndex = dot < 0 ? "" : rest[(dot + 1)..];
        if (session.Length > 0 && session != f[3]) return null;
        if (window.Length > 0 && window != f[4] && window != f[5] && window != f[1]) return null;
        if (paneIndex.Length > 0 ? paneIndex != f[6] : f[7] != "1") return null;
        return pane;
    }

    private Task<Dictionary<string, PaneInfo>>? _snapshot;
    private long _snapshotAt;
    private readonly Lock _snapshotLock = new();

    /// <summary>
    /// Every pane of the server by id, from one <c>list-panes -a</c> shared by all probes that ask within
    /// <paramref name="maxAge"/>: one command per pass instead of one per pane.
    /// </summary>
    public Task<Dictionary<string, PaneInfo>> PanesAsync(TimeSpan maxAge, CancellationToken cancellationToken)
    {
        Task<Dictionary<string, PaneInfo>> snapshot;
        lock (_snapshotLock)
        {
            if (_snapshot is null || _snapshot.IsFaulted || (_snapshot.IsCompleted && _time.GetElapsedTime(_snapshotAt) > maxAge))
            {
                _snapshotAt = _time.GetTimestamp();
                _snapshot = ListPanesAsync();
            }
            snapshot = _snapshot;
        }
        return snapshot.WaitAsync(cancellationToken);
    }

    private async Task<Dictionary<string, PaneInfo>> ListPanesAsync()
    {
        var lines = await CommandAsync("list-panes -a -F '#{pane_id}\t#{window_id}\t#{pane_dead}\t#{pane_current_command}'", CancellationToken.None);
        var panes = new Dictionary<string, PaneInfo>(lines.Count, StringComparer.Ordinal);
        foreach (var line in lines)
        {
            var f = line.Split('\t', 4);
            if (f.Length == 4) panes[f[0]] = new PaneInfo(f[0], f[1], f[2] == "1", f[3]);
        }
        return panes;
    }

    /// <summary>Makes sure %output of <paramref name="windowId"/> reaches this client.</summary>
    public Task EnsureLinkedAsync(string windowId, CancellationToken cancellationToken)
    {
        var link = _linked.GetOrAdd(windowId, id => CommandAsync($"link-window -d -s '{id}' -t '{SessionName}:'", CancellationToken.None));
        if (link.IsFaulted) _linked.TryRemove(new KeyValuePair<string, Task>(windowId, link));
        return link.WaitAsync(cancellationToken);
    }

    /// <summary>Last %output of a pane (UTC ticks), 0 if none seen.</summary>
    public long LastOutput(string paneId) => _panes.TryGetValue(paneId, out var pane) ? Interlocked.Read(ref pane.LastOutputUtcTicks) : 0;

    /// <summary>Calls <paramref name="onOutput"/> once, on the pane's next output.</summary>
    public void NotifyOnNextOutput(string paneId, Action onOutput)
    {
        var pane = _panes.GetOrAdd(paneId, _ => new PaneActivity());
        Action? seen, combined;
        do
        {
            seen = pane.OnOutput;
            combined = (Action?)Delegate.Combine(seen, onOutput);
        } while (Interlocked.CompareExchange(ref pane.OnOutput, combined, seen) != seen);
    }

    private void ReadLoop()
    {
        using var output = new StreamReader(_process.StandardOutput!, Encoding.UTF8, false, 65536);
        List<string>? block = null;
        var blockNumber = "";
        var ours = false;
        try
        {
            while (output.ReadLine() is { } line)
            {
                if (block is not null)
                {
                    if ((line.StartsWith("%end ", StringComparison.Ordinal) || line.StartsWith("%error ", StringComparison.Ordinal)) && Field(line, 2) == blockNumber)
                    {
                        if (ours && _pending.TryDequeue(out var reply))
                        {
                            if (line[1] == 'e' && line[2] == 'n') reply.TrySetResult(block);
                            else reply.TrySetException(new TmuxException("tmux: " + string.Join(" ", block), serverMissing: false));
                        }
                        if (!ours) _ready.TrySetResult();
                        block = null;
                    }
                    else block.Add(line);
                    continue;
                }
                if (line.StartsWith("%output ", StringComparison.Ordinal)) OnOutput(line);
                else if (line.StartsWith("%begin ", StringComparison.Ordinal))
                {
                    block = [];
                    blockNumber = Field(line, 2);
                    ours = Field(line, 3) == "1";
                }
                else if (line.StartsWith("%exit", StringComparison.Ordinal)) break;
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
        }
        Close("the tmux server closed the connection (server gone?)");
        _readerDone.TrySetResult();
    }

    private void OnOutput(string line)
    {
        // "%output %12 data": only the pane id matters.
        var end = line.IndexOf(' ', 8);
        var paneId = end < 0 ? line[8..] : line[8..end];
        var pane = _panes.GetOrAdd(paneId, _ => new PaneActivity());
        Interlocked.Exchange(ref pane.LastOutputUtcTicks, _time.GetUtcNow().UtcTicks);
        if (Volatile.Read(ref pane.OnOutput) is not null && Interlocked.Exchange(ref pane.OnOutput, null) is { } callback) callback();
    }

    private static string Field(string line, int index)
    {
        var parts = line.Split(' ');
        return parts.Length > index ? parts[index] : "";
    }

    private void Close(string reason)
    {
        _closedReason ??= reason;
        _ready.TrySetException(new TmuxException(reason, serverMissing: true));
        while (_pending.TryDequeue(out var reply)) reply.TrySetException(new TmuxException(reason, serverMissing: true));
    }

    public async ValueTask DisposeAsync()
    {
        Close("the connection was closed");
        try
        {
            _input.Close();
        }
        catch (IOException)
        {
        }
        try
        {
            // Closing stdin ends a control client; kill it if it does not go.
            await _process.Exited.WaitAsync(TimeSpan.FromSeconds(2));
        }
        catch (TimeoutException)
        {
            ProcessTree.Signal(_process.Identity, 9);
        }
        try
        {
            await _readerDone.Task.WaitAsync(TimeSpan.FromSeconds(2));
        }
        catch (TimeoutException)
        {
        }
        _process.StandardError?.Dispose();
    }
}

public sealed record PaneInfo(string PaneId, string WindowId, bool Dead, string Command);

public sealed class TmuxException(string message, bool serverMissing) : Exception(message)
{
    /// <summary>The server is not running (or went away): for a probe, the pane is gone.</summary>
    public bool ServerMissing { get; } = serverMissing;
}

/// <summary>The connections, one per tmux server (socket path), opened on first use and reopened after a loss at most
/// once a second.</summary>
public sealed class TmuxServers(TimeProvider time, Microsoft.Extensions.Options.IOptions<MonitorOptions> options) : IAsyncDisposable
{
    private readonly Dictionary<string, (Task<TmuxConnection> Connecting, long StartedAt)> _servers = [];
    private readonly Lock _lock = new();
    private bool _disposed;

    /// <summary>The connection to a server; after a failure, a new attempt comes at most once a second (probes), or at
    /// once with <paramref name="retryNow"/> (a caller adding a target wants today's answer).</summary>
    public async Task<TmuxConnection> GetAsync(string socketPath, CancellationToken cancellationToken, bool retryNow = false)
    {
        Task<TmuxConnection> connecting;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_servers.TryGetValue(socketPath, out var entry) || Reconnect(entry, retryNow))
            {
                if (entry.Connecting is { IsCompletedSuccessfully: true } old) _ = old.Result.DisposeAsync().AsTask();
                entry = (TmuxConnection.ConnectAsync(options.Value.TmuxPath, socketPath, time, CancellationToken.None), time.GetTimestamp());
                _servers[socketPath] = entry;
            }
            connecting = entry.Connecting;
        }
        return await connecting.WaitAsync(cancellationToken);
    }

    private bool Reconnect((Task<TmuxConnection> Connecting, long StartedAt) entry, bool retryNow)
    {
        var failed = entry.Connecting.IsFaulted || entry.Connecting.IsCanceled || (entry.Connecting.IsCompletedSuccessfully && entry.Connecting.Result.IsClosed);
        return failed && (retryNow || time.GetElapsedTime(entry.StartedAt) > TimeSpan.FromSeconds(1));
    }

    public async ValueTask DisposeAsync()
    {
        List<Task<TmuxConnection>> all;
        lock (_lock)
        {
            _disposed = true;
            all = [.. _servers.Values.Select(e => e.Connecting)];
            _servers.Clear();
        }
        foreach (var connecting in all)
        {
            try
            {
                await (await connecting).DisposeAsync();
            }
            catch (TmuxException)
            {
            }
        }
    }
}
