using System.Text;
using Platform.ProcessControl;

namespace Platform.Testing;

/// <summary>
/// A private PostgreSQL cluster (Debian's postgresql package, which eng/test.sh installs) on a loopback port, in a
/// temporary directory, started once per test process and stopped when it exits. Each test gets a database of its own.
/// The server runs as the "postgres" user when the tests run as root (PostgreSQL refuses root); fsync stays on, so the
/// durability tests mean what they say.
/// </summary>
public sealed class PostgresServer
{
    private static readonly Lazy<Task<PostgresServer>> Instance = new(StartAsync);
    private readonly string _directory;
    private readonly string _bin;
    private readonly string? _user;
    private int _databases;

    private PostgresServer(string directory, string bin, string? user, int port)
    {
        (_directory, _bin, _user, Port) = (directory, bin, user, port);
    }

    public int Port { get; }

    /// <summary>The one server of this process, started on first use.</summary>
    public static Task<PostgresServer> SharedAsync() => Instance.Value;

    /// <summary>A new, empty database; its connection string.</summary>
    public async Task<string> CreateDatabaseAsync(string prefix = "test")
    {
        var name = $"{prefix}_{Environment.ProcessId}_{Interlocked.Increment(ref _databases)}";
        await RunAsync(Path.Combine(_bin, "createdb"), ["-h", "127.0.0.1", "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-U", "platform", name]);
        return ConnectionString(name);
    }

    public string ConnectionString(string database) =>
        $"Host=127.0.0.1;Port={Port};Username=platform;Database={database};Timeout=10;Command Timeout=30";

    /// <summary>The image of PostgreSQL in a container (tests/Containers.Tests/postgres/Dockerfile, built by eng/test.sh).</summary>
    public const string ContainerImage = "platform/postgres-test:15";

    private static async Task<PostgresServer> StartAsync()
    {
        // PLATFORM_TEST_POSTGRES=container (eng/test.sh sets it when it has built the image): the server runs in a
        // container of that image, on the host's network (no port proxy in the way), on a free loopback port.
        if (Environment.GetEnvironmentVariable("PLATFORM_TEST_POSTGRES") == "container") return await StartContainerAsync();
        var bin = Directory.Exists("/usr/lib/postgresql")
            ? Directory.EnumerateDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, "pg_ctl"))).OrderDescending().FirstOrDefault()
            : null;
        if (bin is null) throw new InvalidOperationException("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/pg_ctl): eng/test.sh installs Debian's postgresql package");
        RemoveStale();
        var root = Environment.IsPrivilegedProcess;
        var user = root ? "postgres" : null;
        var directory = Directory.CreateTempSubdirectory("platform-pg-").FullName;
        var data = Path.Combine(directory, "data");
        if (root) await RunAsync("/bin/chown", ["postgres:postgres", directory], asUser: null);
        var port = ServiceProcess.FreePort();
        var server = new PostgresServer(directory, bin, user, port);
        await server.RunAsync(Path.Combine(bin, "initdb"), ["-D", data, "-A", "trust", "-U", "platform", "-E", "UTF8", "--locale=C", "--no-sync"]);
        await server.RunAsync(Path.Combine(bin, "pg_ctl"), ["-D", data, "-l", Path.Combine(directory, "server.log"), "-w", "-t", "60",
            "-o", $"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=300", "start"]);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => server.Stop();
        return server;
    }

    private static async Task<PostgresServer> StartContainerAsync()
    {
        var bin = Directory.Exists("/usr/lib/postgresql")
            ? Directory.EnumerateDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, "createdb"))).OrderDescending().FirstOrDefault()
            : null;
        if (bin is null) throw new InvalidOperationException("PostgreSQL's client programs are not installed (/usr/lib/postgresql/*/bin/createdb): eng/test.sh installs Debian's postgresql package");
        var port = ServiceProcess.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture);
        var name = $"platform-pg-{Environment.ProcessId}-{port}";
        await RunAsync("docker", ["rm", "-f", name], asUser: null, check: false);
        // The container ends with this process, however it ends: a watch in it (on the host's pid namespace) stops the
        // server once this process is gone, and --rm removes the container. Nothing is spawned while this process exits.
        var watch = $"/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/data -p {port} -c listen_addresses=127.0.0.1 -c max_connections=300 & pg=$!; " +
            $"while [ -d /proc/{Environment.ProcessId} ] && kill -0 $pg 2>/dev/null; do sleep 1; done; kill -QUIT $pg 2>/dev/null; wait $pg";
        await RunAsync("docker", ["run", "-d", "--rm", "--name", name, "--network", "host", "--pid", "host", ContainerImage, "/bin/sh", "-c", watch], asUser: null);
        var server = new PostgresServer(Path.GetTempPath(), bin, null, int.Parse(port, System.Globalization.CultureInfo.InvariantCulture));
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                await RunAsync(Path.Combine(bin, "pg_isready"), ["-q", "-h", "127.0.0.1", "-p", port], asUser: null);
                return server;
            }
            catch (InvalidOperationException) when (attempt < 300)
            {
                await Task.Delay(100);
            }
        }
    }

    /// <summary>Removes what earlier test processes left (their servers gone: no live postmaster.pid).</summary>
    private static void RemoveStale()
    {
        foreach (var directory in Directory.EnumerateDirectories(Path.GetTempPath(), "platform-pg-*"))
        {
            try
            {
                var pidFile = Path.Combine(directory, "data", "postmaster.pid");
                if (File.Exists(pidFile) && int.TryParse(File.ReadLines(pidFile).FirstOrDefault(), out var pid) && ProcFs.Identify(pid) is not null) continue;
                if (Directory.GetLastWriteTimeUtc(directory) > DateTime.UtcNow.AddMinutes(-1)) continue; // being set up right now
                Directory.Delete(directory, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
    }

    /// <summary>Stops the server at once (SIGQUIT to the postmaster: PostgreSQL's immediate shutdown, no checkpoint, since
    /// its files are deleted next) and removes its directory. Signals, not pg_ctl: nothing is spawned while the process
    /// exits.</summary>
    private void Stop()
    {
        try
        {
            var pidFile = Path.Combine(_directory, "data", "postmaster.pid");
            if (File.Exists(pidFile) && int.TryParse(File.ReadLines(pidFile).First(), out var pid) && ProcFs.Identify(pid) is { } postmaster)
            {
                ProcessTree.Signal(postmaster, 3); // SIGQUIT
                for (var waited = 0; waited < 250 && ProcFs.IsAlive(postmaster); waited++) Thread.Sleep(20);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            // Exiting anyway; the directory goes below.
        }
        // The server's last processes may still be removing their files for a moment.
        for (var attempt = 0; attempt < 20 && Directory.Exists(_directory); attempt++)
        {
            try { Directory.Delete(_directory, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Thread.Sleep(50); }
        }
    }

    private Task RunAsync(string executable, string[] args) => RunAsync(executable, args, _user);

    private static async Task RunAsync(string executable, string[] args, string? asUser, bool check = true)
    {
        var env = new Dictionary<string, string> { ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin", ["LC_ALL"] = "C", ["HOME"] = "/tmp" };
        var (file, arguments) = asUser is null ? (executable, args) : ("/usr/sbin/runuser", ["-u", asUser, "--", executable, .. args]);
        var process = ChildReaper.Shared.Spawn(new SpawnRequest(file, arguments, env, "/tmp", StdioTarget.Pipe, StdioTarget.Pipe));
        var output = new StreamReader(process.StandardOutput!).ReadToEndAsync();
        var errors = new StreamReader(process.StandardError!).ReadToEndAsync();
        var exit = await process.Exited.WaitAsync(TimeSpan.FromSeconds(90));
        if (check && exit.Code != 0)
            throw new InvalidOperationException(new StringBuilder($"{Path.GetFileName(executable)} {string.Join(' ', args)} failed ({exit})")
                .AppendLine().Append(await output).Append(await errors).ToString());
    }
}
