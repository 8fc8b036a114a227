using System.IO.Hashing;
using System.Text;

namespace Platform.AgentMonitor.Probes;

/// <summary>
/// Watches a log file: growth, shrinking (rotation) or a change of its last bytes is activity; the last lines are
/// matched against the patterns. The first look takes the file's mtime as its last activity, so a log that has been
/// quiet for long is idle at once.
/// </summary>
internal sealed class OutputActivityProbe(ProbeContext context, int patternLines) : IBlockingProbe
{
    private const int TailBytes = 8192;
    private bool _seen;
    private long _length;
    private DateTime _mtime;
    private ulong _tailHash;
    private List<string> _lines = [];
    private DateTimeOffset _lastActivity;

    public Task<ProbeResult> RunAsync(CancellationToken cancellationToken)
    {
        var path = context.Spec.Target.OutputActivity.Path;
        try
        {
            var file = new FileInfo(path);
            if (!file.Exists) return Task.FromResult(ProbeResult.Failed($"no file at {path}"));
            if (!_seen || file.Length != _length || file.LastWriteTimeUtc != _mtime)
            {
                var (hash, tail) = ReadTail(path, out var length);
                var changed = !_seen ? false : length != _length || hash != _tailHash;
                if (!_seen) _lastActivity = file.LastWriteTimeUtc;
                else if (changed) _lastActivity = context.Time.GetUtcNow();
                _seen = true;
                _length = length;
                _mtime = file.LastWriteTimeUtc;
                _tailHash = hash;
                _lines = Patterns.LastLines(tail, patternLines);
            }
            return Task.FromResult(Patterns.Classify(context.Spec, _lines, _lastActivity, $"{_length} bytes"));
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            return Task.FromResult(ProbeResult.Unknown($"cannot read {path}: {e.Message}"));
        }
    }

    private static (ulong Hash, string Tail) ReadTail(string path, out long length)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.None);
        length = stream.Length;
        var count = (int)Math.Min(TailBytes, length);
        var buffer = new byte[count];
        stream.Position = length - count;
        stream.ReadExactly(buffer);
        return (XxHash64.HashToUInt64(buffer), Encoding.UTF8.GetString(buffer));
    }

    public void Dispose() { }
}
