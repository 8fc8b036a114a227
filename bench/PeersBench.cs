using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using Google.Protobuf.WellKnownTypes;
using Grpc.Net.Client;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Supervisor.V1;
using Platform.Testing;

namespace Platform.Bench;

/// <summary>
/// supervisord, PM2 and this platform side by side in one run, on the same machine and the same managed program (a
/// copy of /bin/sleep with a name of its own per tool, so that /proc tells whose a process is). Every figure is read
/// from /proc or from files the programs write, never from a tool's own output. Each tool has a private directory
/// (config, socket, home); everything started is stopped at the end. The peers are installed when missing (Debian's
/// supervisor, npm's pm2).
/// </summary>
public static class PeersBench
{
    private const int SIGKILL = 9;

    /// <summary>The platform again, each service its Native AOT build (eng/publish-native.sh; the images' build).</summary>
    private const string NativeTool = "platform AOT";

    public static async Task<int> RunAsync(string[] args)
    {
        int Option(string name, int fallback) => BenchOptions.Int(args, name, fallback);
        var kills = Option("--kills", 30);
        var settle = TimeSpan.FromSeconds(Option("--settle", 60));
        var idle = Option("--idle", 300);
        var warmRuns = Math.Max(1, Option("--warm-runs", 5));
        var tools = BenchOptions.Text(args, "--tools")?.Split(',') ?? ["supervisord", "PM2", "platform", NativeTool, PeersMonitoring.Tool];
        var scenarios = (BenchOptions.Text(args, "--scenarios") ?? "1,2,3,4,5,6,7,8").Split(',').Select(a => int.Parse(a, CultureInfo.InvariantCulture)).ToHashSet();
        var agents = (BenchOptions.Text(args, "--agents") ?? "50,500,5000").Split(',', StringSplitOptions.RemoveEmptyEntries).Select(a => int.Parse(a, CultureInfo.InvariantCulture)).ToList();
        await EnsurePeersAsync();
        var pm2Version = JsonDocument.Parse(await File.ReadAllTextAsync(Pm2Package)).RootElement.GetProperty("version").GetString();
        Console.WriteLine($"Peers: {System.Environment.ProcessorCount} cores; supervisord {(await RunAsync("/usr/bin/supervisord", ["--version"])).Trim()}, PM2 {pm2Version}, this platform ({Configuration})");

        var root = Directory.CreateTempSubdirectory("platform-peers-").FullName;
        var figures = new List<Figure>();
        try
        {
            foreach (var kind in tools.Where(t => t != PeersMonitoring.Tool))
            {
                if (kind == NativeTool && AppHostProcess.NativeBuild(typeof(PeersBench).Assembly, "Platform.Launcher") is null)
                {
                    Console.WriteLine($"== {kind}: no Native AOT builds under artifacts/publish (eng/publish-native.sh); left out");
                    continue;
                }
                var dir = Directory.CreateDirectory(Path.Combine(root, kind.ToLowerInvariant().Replace(' ', '-'))).FullName;
                var exe = Path.Combine(dir, $"psleep-{kind.ToLowerInvariant().Replace(' ', '-')}-{Guid.NewGuid().ToString("N")[..6]}");
                File.Copy("/bin/sleep", exe);
                File.SetUnixFileMode(exe, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
                Tool New() => kind switch
                {
                    "supervisord" => new Supervisord(dir),
                    "PM2" => new Pm2(dir),
                    NativeTool => new PlatformTool(dir, native: true),
                    _ => new PlatformTool(dir, native: false),
                };
                Console.WriteLine($"== {kind}");
                try
                {
                    await MeasureAsync(kind, New, exe, dir, kills, settle, idle, warmRuns, scenarios, figures);
                }
                finally
                {
                    foreach (var pid in Running(exe)) AppHostProcess.Signal(pid, SIGKILL); // whatever a tool left
                }
            }
            if (tools.Contains(PeersMonitoring.Tool) && agents.Count > 0 && scenarios.Contains(7))
            {
                // (7) One monitoring cycle: Tmux-Orchestrator's sequential captures beside the AgentMonitor's probes.
                Console.WriteLine($"== monitoring: {PeersMonitoring.Tool} and platform");
                await PeersMonitoring.RunAsync(root, agents, (row, tool, value, shown) =>
                {
                    figures.Add(new Figure(row, tool, value, shown));
                    Console.WriteLine($"  {row}, {tool}: {shown}");
                });
            }
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
        return Print(figures);
    }

#if DEBUG
    private const string Configuration = "Debug build: run with -c Release for figures";
#else
    private const string Configuration = "Release build";
#endif

    /// <summary>One row's figure for one tool: lower is better; <see cref="Shown"/> is how it reads.</summary>
    private sealed record Figure(string Row, string Tool, double Value, string Shown);

    private static async Task MeasureAsync(string kind, Func<Tool> create, string exe, string dir, int kills, TimeSpan settle, int idle, int warmRuns, HashSet<int> scenarios, List<Figure> figures)
    {
        void Add(string row, double value, string shown)
        {
            figures.Add(new Figure(row, kind, value, shown));
            Console.WriteLine($"  {row}: {shown}");
        }
        Managed Sleeper(int i) => new($"p{i:000}", exe, [$"{100000 + i}"], AtOnce: System.Environment.GetEnvironmentVariable("PEERS_PLAIN") is null);

        // (2) Start N, cold: from nothing to all N exec'd, the daemon's start included.
        foreach (var n in scenarios.Contains(2) ? new[] { 100, 300 } : [])
        {
            await using var cold = create();
            var clock = Stopwatch.StartNew();
            await cold.ColdStartAsync([.. Enumerable.Range(0, n).Select(Sleeper)]);
            await WaitForAsync(() => Running(exe).Count == n, TimeSpan.FromSeconds(120), $"{n} programs of {kind}");
            Add($"start {n}, cold (daemon start included)", clock.Elapsed.TotalSeconds, $"{clock.Elapsed.TotalSeconds:0.00} s");
            if (cold.DaemonStart is { } daemon)
                Add($"start {n}, cold, from the daemon serving", (clock.Elapsed - daemon).TotalSeconds, $"{(clock.Elapsed - daemon).TotalSeconds:0.00} s (serving after {daemon.TotalSeconds:0.00} s)");
            await cold.RemoveAllAsync();
        }

        await using var tool = create();
        await tool.StartAsync();

        // (2) Start N, warm: the daemon runs and has started and removed N programs once already (untimed: a
        // running daemon's code is warm, the JIT's tier-up of the platform's services included); from the command
        // to all N exec'd. Timed --warm-runs times each (the rows move by a third from run to run on a small
        // machine): the row is the median, with the range beside it.
        var warm = new Dictionary<int, List<double>> { [100] = [], [300] = [] };
        var rounds = new[] { (100, false), (300, false) }.Concat(Enumerable.Repeat(new[] { (100, true), (300, true) }, warmRuns).SelectMany(r => r));
        foreach (var (n, timed) in scenarios.Contains(2) ? rounds : [])
        {
            var cpuBefore = tool.Supervisors.Select(Measure.Cpu).ToList();
            var clock = Stopwatch.StartNew();
            await tool.AddAsync([.. Enumerable.Range(0, n).Select(Sleeper)]);
            var acknowledged = clock.Elapsed;
            await WaitForAsync(() => Running(exe).Count == n, TimeSpan.FromSeconds(120), $"{n} programs of {kind}");
            if (timed)
            {
                var cpu = tool.Supervisors.Select((pid, i) => (Measure.Cpu(pid) - cpuBefore[i]).TotalMilliseconds);
                warm[n].Add(clock.Elapsed.TotalSeconds);
                Console.WriteLine($"    start {n} on a running daemon: {clock.Elapsed.TotalSeconds:0.000} s, acknowledged after {acknowledged.TotalMilliseconds:0} ms; CPU of the supervising processes: {string.Join(" + ", cpu.Select(c => $"{c:0} ms"))}");
            }
            await tool.RemoveAllAsync();
            await WaitForAsync(() => Running(exe).Count == 0, TimeSpan.FromSeconds(60), $"{kind}'s programs to stop");
        }
        foreach (var (n, times) in warm.Where(w => w.Value.Count > 0))
        {
            times.Sort();
            var median = times.Count % 2 == 1 ? times[times.Count / 2] : (times[times.Count / 2 - 1] + times[times.Count / 2]) / 2;
            Add($"start {n} on a running daemon", median,
                times.Count == 1 ? $"{median:0.000} s" : $"{median:0.000} s (median of {times.Count}; {times[0]:0.000}-{times[^1]:0.000})");
        }

        // (1) Restart latency: SIGKILL of the program -> a new process of it exec'd, each tool set to restart at once.
        if (scenarios.Contains(1))
        {
            await tool.AddAsync([new Managed("restarter", exe, ["100000"], AtOnce: true)]);
            await WaitForAsync(() => Running(exe).Count == 1, TimeSpan.FromSeconds(30), $"{kind}'s program");
            var latencies = new List<double>();
            for (var i = 0; i < kills; i++)
            {
                // More than a second apart: PM2 counts a restart within min_uptime (1 s) as unstable and stops after 16.
                await Task.Delay(1200);
                var current = Running(exe).Single();
                var clock = Stopwatch.StartNew();
                AppHostProcess.Signal(current, SIGKILL);
                // The new process's pid comes after the killed one's (an armed successor is spawned before the kill).
                while (!Running(exe, allocatedAfter: current).Any(p => p != current))
                    if (clock.Elapsed > TimeSpan.FromSeconds(10)) throw new TimeoutException($"{kind} did not restart its program within 10 s");
                latencies.Add(clock.Elapsed.TotalMilliseconds);
            }
            latencies.Sort();
            double P(double q) => latencies[(int)Math.Min(latencies.Count - 1, Math.Ceiling(q * latencies.Count) - 1)];
            Add($"SIGKILL -> new process exec'd, median ({kills} kills)", P(0.5), $"{P(0.5):0.0} ms (p90 {P(0.9):0.0})");
            await tool.RemoveAllAsync();
            await WaitForAsync(() => Running(exe).Count == 0, TimeSpan.FromSeconds(30), $"{kind}'s program to stop");
        }

        // (3) and (4) Stop 20 trees: two children and an escaper (setsid, its parent alive; then double-forked, its
        // parent gone before the stop). Survivors are processes of the program still alive 2 s after the stop.
        var escapers = new[] { (3, "stop 20 trees with a setsid escaper", $"setsid {exe} 100003 &"), (4, "stop 20 trees with a double-forked escaper", $"(setsid {exe} 100003 &);") };
        foreach (var (_, row, escaper) in escapers.Where(e => scenarios.Contains(e.Item1)))
        {
            var trees = Enumerable.Range(0, 20).Select(i => new Managed($"t{i:00}", "/bin/sh", ["-c", $"{exe} 100001 & {exe} 100002 & {escaper} wait"], AtOnce: true)).ToList();
            await tool.AddAsync(trees);
            await WaitForAsync(() => Running(exe).Count == 60, TimeSpan.FromSeconds(60), $"20 trees of {kind}");
            await Task.Delay(500);
            var clock = Stopwatch.StartNew();
            await tool.RemoveAllAsync();
            var stopped = clock.Elapsed;
            await Task.Delay(2000);
            var survivors = Running(exe);
            Add($"{row}: survivors", survivors.Count, $"{survivors.Count} of 60 ({stopped.TotalSeconds:0.00} s to stop)");
            foreach (var pid in survivors) AppHostProcess.Signal(pid, SIGKILL);
        }

        // (6) Restart storm: a program that exits 1 at once, with the tool's defaults, for 20 s; each start appends a
        // line to a file.
        if (scenarios.Contains(6))
        {
            var starts = Path.Combine(dir, "storm.starts");
            await tool.AddAsync([new Managed("storm", "/bin/sh", ["-c", $"echo x >> {starts}; exit 1"], AtOnce: false)]);
            await Task.Delay(TimeSpan.FromSeconds(20));
            var count = File.Exists(starts) ? File.ReadAllLines(starts).Length : 0;
            await tool.RemoveAllAsync();
            Add("restart storm: starts in 20 s with defaults (fewer is gentler)", count, $"{count} starts");
        }

        // (5) At rest: RSS and CPU of the supervising processes with 300 idle programs, after a settle.
        if (scenarios.Contains(5))
        {
            await tool.AddAsync([.. Enumerable.Range(0, idle).Select(Sleeper)]);
            await WaitForAsync(() => Running(exe).Count == idle, TimeSpan.FromSeconds(120), $"{idle} programs of {kind}");
            await Task.Delay(settle);
            var pids = tool.Supervisors;
            var before = pids.Select(Measure.ThreadCpu).ToList();
            var ticksBefore = pids.Select(Measure.Cpu).ToList();
            var clock = Stopwatch.StartNew();
            await Task.Delay(TimeSpan.FromSeconds(30));
            var cpu = pids.Select((p, i) => Measure.CpuBetween(before[i], Measure.ThreadCpu(p)).TotalSeconds / clock.Elapsed.TotalSeconds * 100).ToList();
            var ticks = pids.Select((p, i) => (Measure.Cpu(p) - ticksBefore[i]).TotalSeconds / clock.Elapsed.TotalSeconds * 100).ToList();
            Console.WriteLine($"  CPU at rest by the tick-sampled utime + stime instead: {ticks.Sum():0.00} %");
            var rss = pids.Select(Measure.Rss).ToList();
            Add($"RSS of the supervising processes, {idle} idle programs", rss.Sum(), $"{rss.Sum():0.0} MiB");
            Add($"CPU at rest, {idle} idle programs (30 s after a {settle.TotalSeconds:0} s settle)", cpu.Sum(), $"{cpu.Sum():0.00} %");
            if (tool is PlatformTool platform)
            {
                for (var i = 0; i < pids.Count; i++)
                    Console.WriteLine($"  {platform.Names[i]}: {rss[i]:0.0} MiB, {cpu[i]:0.00} %");
                var launcher = Array.IndexOf(platform.Names, "launcher");
                Add("the Launcher alone: RSS", rss[launcher], $"{rss[launcher]:0.0} MiB");
            }
            await tool.RemoveAllAsync();
            await WaitForAsync(() => Running(exe).Count == 0, TimeSpan.FromSeconds(60), $"{kind}'s programs to stop");
        }

        // (8) The command line: the status of 300 programs as JSON (supervisorctl has no JSON: its status table), the
        // wall time of the whole command from spawn to exit, 20 runs after one untimed.
        if (scenarios.Contains(8))
        {
            await tool.AddAsync([.. Enumerable.Range(0, idle).Select(Sleeper)]);
            await WaitForAsync(() => Running(exe).Count == idle, TimeSpan.FromSeconds(120), $"{idle} programs of {kind}");
            foreach (var (label, command) in await tool.ListCommandsAsync())
            {
                var times = new List<double>();
                for (var i = 0; i <= 20; i++)
                {
                    var clock = Stopwatch.StartNew();
                    var output = await RunAsync(command[0], command[1..], tool.CommandEnvironment, check: false);
                    if (i > 0) times.Add(clock.Elapsed.TotalMilliseconds);
                    if (i == 0 && !output.Contains("p299", StringComparison.Ordinal)) throw new InvalidOperationException($"{label} did not list p299: {output[..Math.Min(500, output.Length)]}");
                }
                times.Sort();
                var shown = $"{times[10]:0} ms (min {times[0]:0}, max {times[^1]:0})";
                if (label.Length == 0) Add($"list {idle} programs ({string.Join(' ', ListedAs)}), median of 20", times[10], shown);
                else Console.WriteLine($"  {label}: {shown}");
            }
            await tool.RemoveAllAsync();
            await WaitForAsync(() => Running(exe).Count == 0, TimeSpan.FromSeconds(60), $"{kind}'s programs to stop");
        }
    }

    private static readonly string[] ListedAs = ["supervisorctl status,", "pm2 jlist,", "platformctl get workloads -o json"];

    private static int Print(List<Figure> figures)
    {
        var rows = new List<string[]> { new[] { "figure", "supervisord", "PM2", PeersMonitoring.Tool, "platform", "platform vs best peer", NativeTool, $"{NativeTool} vs best peer" } };
        foreach (var row in figures.Select(f => f.Row).Distinct())
        {
            string Cell(string tool) => figures.FirstOrDefault(f => f.Row == row && f.Tool == tool)?.Shown ?? "-";
            var peers = figures.Where(f => f.Row == row && !f.Tool.StartsWith("platform", StringComparison.Ordinal)).ToList();
            string Verdict(string tool)
            {
                var ours = figures.FirstOrDefault(f => f.Row == row && f.Tool == tool);
                if (ours is null || peers.Count == 0) return "-";
                var best = peers.Min(p => p.Value);
                return Math.Abs(best - ours.Value) < 1e-9 ? "level"
                    : ours.Value < best ? (ours.Value <= 0 ? "better (none)" : $"{best / ours.Value:0.0}x better")
                    : best <= 0 ? "behind" : $"{ours.Value / best:0.0}x behind";
            }
            rows.Add([row, Cell("supervisord"), Cell("PM2"), Cell(PeersMonitoring.Tool), Cell("platform"), Verdict("platform"), Cell(NativeTool), Verdict(NativeTool)]);
        }
        Console.WriteLine();
        foreach (var line in Testing.Chaos.ChaosTable.Render(rows)) Console.WriteLine(line);
        return 0;
    }

    // ------------------------------------------------------------------ /proc

    /// <summary>
    /// Live processes running <paramref name="exe"/> (after their exec); optionally only those whose pid was allocated
    /// after <paramref name="allocatedAfter"/>'s, so that a poll reads few
    /// /proc entries. Pids are allocated in order and wrap at kernel.pid_max (32,768 here), which this allows for.
    /// </summary>
    private static List<int> Running(string exe, int allocatedAfter = 0)
    {
        var last = allocatedAfter == 0 ? 0 : LastPid();
        bool Candidate(int pid) => allocatedAfter == 0
            || (allocatedAfter <= last ? pid > allocatedAfter && pid <= last : pid > allocatedAfter || pid <= last);
        var found = new List<int>();
        foreach (var pid in ProcFs.Pids())
        {
            if (!Candidate(pid)) continue;
            string? target;
            try
            {
                target = new FileInfo($"/proc/{pid}/exe").LinkTarget;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            if (target == exe && ProcFs.ReadStat(pid) is { IsZombie: false }) found.Add(pid);
        }
        return found;
    }

    /// <summary>The pid the kernel allocated last (the fifth field of /proc/loadavg).</summary>
    private static int LastPid() => int.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[4], CultureInfo.InvariantCulture);

    private static async Task WaitForAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout) throw new TimeoutException($"waited {timeout.TotalSeconds:0} s for {what}");
            await Task.Delay(1);
        }
    }

    // ------------------------------------------------------------------ commands

    private static Dictionary<string, string> Environment(IReadOnlyDictionary<string, string>? extra = null)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry e in System.Environment.GetEnvironmentVariables()) env[(string)e.Key] = (string?)e.Value ?? "";
        foreach (var (k, v) in extra ?? new Dictionary<string, string>()) env[k] = v;
        return env;
    }

    /// <summary>Runs a command to its end (through the platform's reaper: this process reaps every child) and returns
    /// its output; a failure throws with what it printed.</summary>
    private static async Task<string> RunAsync(string exe, IReadOnlyList<string> args, IReadOnlyDictionary<string, string>? env = null, bool check = true)
    {
        var process = ChildReaper.Shared.Spawn(new SpawnRequest(exe, args, Environment(env), null, StdioTarget.Pipe, StdioTarget.Pipe));
        using var stdout = new StreamReader(process.StandardOutput!);
        using var stderr = new StreamReader(process.StandardError!);
        var output = stdout.ReadToEndAsync();
        var error = stderr.ReadToEndAsync();
        var status = await process.Exited.WaitAsync(TimeSpan.FromMinutes(3));
        var text = await output + await error;
        if (check && status.Code != 0) throw new InvalidOperationException($"{exe} {string.Join(' ', args)} failed ({status}): {text}");
        return text;
    }

    /// <summary>Debian's supervisor and npm's pm2, installed when missing (no service started by the package).</summary>
    private static async Task EnsurePeersAsync()
    {
        if (!File.Exists("/usr/bin/supervisord"))
        {
            Console.WriteLine("installing supervisor (apt-get)");
            // A package's postinst must not start the system's own supervisord: policy-rc.d says no (if none is there).
            const string policy = "/usr/sbin/policy-rc.d";
            var ours = !File.Exists(policy);
            if (ours)
            {
                await File.WriteAllTextAsync(policy, "#!/bin/sh\nexit 101\n");
                File.SetUnixFileMode(policy, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
            try
            {
                await RunAsync("apt-get", ["update", "-qq"]);
                await RunAsync("apt-get", ["install", "-y", "-qq", "supervisor"], new Dictionary<string, string> { ["DEBIAN_FRONTEND"] = "noninteractive" });
            }
            finally
            {
                if (ours) File.Delete(policy);
            }
        }
        if (!File.Exists(Pm2Package))
        {
            Console.WriteLine("installing pm2 (npm)");
            await RunAsync("npm", ["install", "-g", "--no-fund", "--no-audit", "pm2@7.0.4"]);
        }
    }

    private const string Pm2Package = "/usr/lib/node_modules/pm2/package.json";

    private static Dictionary<string, string> Pm2Home(string dir) => new() { ["PM2_HOME"] = Path.Combine(dir, "pm2-home") };

    // ------------------------------------------------------------------ the tools

    /// <summary>A managed program: at once = restart immediately on any exit; otherwise the tool's defaults.</summary>
    private sealed record Managed(string Name, string Executable, string[] Args, bool AtOnce);

    private abstract class Tool : IAsyncDisposable
    {
        /// <summary>Starts the daemon with no programs.</summary>
        public abstract Task StartAsync();

        /// <summary>From nothing to these programs started, the daemon's start included, the tool's usual way.</summary>
        public virtual async Task ColdStartAsync(IReadOnlyList<Managed> programs)
        {
            var clock = Stopwatch.StartNew();
            await StartAsync();
            DaemonStart = clock.Elapsed;
            await AddAsync(programs);
        }

        /// <summary>How long the daemon took to serve in a cold start, where that is a step of its own (not for
        /// supervisord, whose daemon starts the programs itself, nor PM2, whose first command starts its daemon).</summary>
        public TimeSpan? DaemonStart { get; private set; }

        /// <summary>Adds and starts programs on the running daemon.</summary>
        public abstract Task AddAsync(IReadOnlyList<Managed> programs);

        /// <summary>Stops every program (its whole tree, as far as the tool can) and forgets it.</summary>
        public abstract Task RemoveAllAsync();

        /// <summary>The command that lists every program's status (the row's figure: label ""), and others to show
        /// beside it (labelled).</summary>
        public abstract Task<IReadOnlyList<(string Label, string[] Command)>> ListCommandsAsync();

        /// <summary>The environment of the tool's commands.</summary>
        public virtual IReadOnlyDictionary<string, string>? CommandEnvironment => null;

        /// <summary>The processes that supervise (what runs while the programs run).</summary>
        public abstract IReadOnlyList<int> Supervisors { get; }

        public abstract ValueTask DisposeAsync();
    }

    /// <summary>supervisord in the foreground (-n), a config, socket and logs of its own; programs are files under
    /// programs/ that `supervisorctl update` picks up.</summary>
    private sealed class Supervisord(string dir) : Tool
    {
        private readonly string _config = Path.Combine(dir, "supervisord.conf");
        private readonly string _programs = Directory.CreateDirectory(Path.Combine(dir, "programs")).FullName;
        private SpawnedProcess? _daemon;

        public override async Task StartAsync()
        {
            var logs = Directory.CreateDirectory(Path.Combine(dir, "logs")).FullName;
            await File.WriteAllTextAsync(_config, $"""
                [unix_http_server]
                file={dir}/supervisor.sock
                [supervisord]
                logfile={dir}/supervisord.log
                pidfile={dir}/supervisord.pid
                childlogdir={logs}
                [rpcinterface:supervisor]
                supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
                [supervisorctl]
                serverurl=unix://{dir}/supervisor.sock
                [include]
                files = {_programs}/*.conf
                """);
            _daemon = ChildReaper.Shared.Spawn(new SpawnRequest("/usr/bin/supervisord", ["-n", "-c", _config], Environment(), dir));
            var clock = Stopwatch.StartNew();
            while ((await RunAsync("/usr/bin/supervisorctl", ["-c", _config, "pid"], check: false)).Trim() is var pid && (pid.Length == 0 || !pid.All(char.IsAsciiDigit)))
            {
                if (clock.Elapsed > TimeSpan.FromSeconds(30)) throw new TimeoutException("supervisord did not answer");
                await Task.Delay(20);
            }
        }

        public override async Task ColdStartAsync(IReadOnlyList<Managed> programs)
        {
            // Its usual way: the programs in the config, then the daemon, which starts them.
            await WriteAsync(programs);
            await StartAsync();
        }

        private async Task WriteAsync(IReadOnlyList<Managed> programs)
        {
            foreach (var p in programs)
            {
                var command = string.Join(' ', new[] { p.Executable }.Concat(p.Args).Select(a => a.Contains(' ') ? $"'{a}'" : a));
                var settings = p.AtOnce
                    ? "autorestart=true\nstartsecs=0\nstartretries=1000000\nstopasgroup=true\nkillasgroup=true\nstopwaitsecs=1\n"
                    : "";
                await File.WriteAllTextAsync(Path.Combine(_programs, $"{p.Name}.conf"), $"[program:{p.Name}]\ncommand={command}\n{settings}");
            }
        }

        public override async Task AddAsync(IReadOnlyList<Managed> programs)
        {
            await WriteAsync(programs);
            await RunAsync("/usr/bin/supervisorctl", ["-c", _config, "update"]);
        }

        public override async Task RemoveAllAsync()
        {
            // Stopped all at once, then removed (`update` alone stops removed programs one after another).
            await RunAsync("/usr/bin/supervisorctl", ["-c", _config, "stop", "all"], check: false);
            foreach (var file in Directory.GetFiles(_programs)) File.Delete(file);
            await RunAsync("/usr/bin/supervisorctl", ["-c", _config, "update"]);
        }

        public override Task<IReadOnlyList<(string, string[])>> ListCommandsAsync() =>
            Task.FromResult<IReadOnlyList<(string, string[])>>([("", ["/usr/bin/supervisorctl", "-c", _config, "status"])]);

        public override IReadOnlyList<int> Supervisors => _daemon is null ? [] : [_daemon.Pid];

        public override async ValueTask DisposeAsync()
        {
            if (_daemon is null) return;
            AppHostProcess.Signal(_daemon.Pid, 15);
            if (await Task.WhenAny(_daemon.Exited, Task.Delay(10000)) != _daemon.Exited) AppHostProcess.Signal(_daemon.Pid, SIGKILL);
            await _daemon.Exited;
        }
    }

    /// <summary>PM2 with a home of its own (PM2_HOME): programs from an ecosystem file, `pm2 delete all`, `pm2 kill`.</summary>
    private sealed class Pm2(string dir) : Tool
    {
        private readonly Dictionary<string, string> _env = Pm2Home(dir);
        private int _batch;

        public override Task StartAsync() => RunAsync("pm2", ["ping"], _env);

        public override Task ColdStartAsync(IReadOnlyList<Managed> programs) => AddAsync(programs); // its first command starts the daemon

        public override async Task AddAsync(IReadOnlyList<Managed> programs)
        {
            var apps = programs.Select(p => p.AtOnce
                ? new Dictionary<string, object> { ["name"] = p.Name, ["script"] = p.Executable, ["args"] = p.Args, ["interpreter"] = "none", ["autorestart"] = true, ["restart_delay"] = 0, ["kill_timeout"] = 1000, ["treekill"] = true }
                : new Dictionary<string, object> { ["name"] = p.Name, ["script"] = p.Executable, ["args"] = p.Args, ["interpreter"] = "none" });
            var file = Path.Combine(dir, $"ecosystem-{++_batch}.json");
            await File.WriteAllTextAsync(file, JsonSerializer.Serialize(new { apps }));
            await RunAsync("pm2", ["start", file], _env);
        }

        public override Task RemoveAllAsync() => RunAsync("pm2", ["delete", "all"], _env, check: false);

        public override Task<IReadOnlyList<(string, string[])>> ListCommandsAsync() =>
            Task.FromResult<IReadOnlyList<(string, string[])>>([("", ["pm2", "jlist"])]);

        public override IReadOnlyDictionary<string, string>? CommandEnvironment => _env;

        public override IReadOnlyList<int> Supervisors =>
            File.Exists(Path.Combine(_env["PM2_HOME"], "pm2.pid")) ? [int.Parse(File.ReadAllText(Path.Combine(_env["PM2_HOME"], "pm2.pid")).Trim(), CultureInfo.InvariantCulture)] : [];

        public override async ValueTask DisposeAsync() => await RunAsync("pm2", ["kill"], _env, check: false);
    }

    /// <summary>This platform's four services, each its own process from its Release build; programs are workloads
    /// applied to the Supervisor, all at once.</summary>
    private sealed class PlatformTool(string dir, bool native) : Tool
    {
        public readonly string[] Names = ["registry", "launcher", "monitor", "supervisor"];
        private readonly List<ServiceProcess> _services = [];
        private GrpcChannel? _channel;
        private string _supervisorUrl = "";
        private Supervisor.V1.Supervisor.SupervisorClient _client = null!;

        private string Dll(string name) => native && name != "platformctl"
            ? AppHostProcess.NativeBuild(typeof(PeersBench).Assembly, name) ?? throw new InvalidOperationException($"no Native AOT build of {name}: run eng/publish-native.sh")
            : AppHostProcess.ProjectOutput(typeof(PeersBench).Assembly, name);

        public override async Task StartAsync()
        {
            var quiet = new Dictionary<string, string> { ["Logging__LogLevel__Default"] = "Warning" };
            string Data(string name) => Directory.CreateDirectory(Path.Combine(dir, "data", name)).FullName;
            // The registry, the Launcher and the Monitor at once (the two find the registry when it answers: their
            // session and discovery calls retry), then the Supervisor, which launches as soon as it serves.
            var registryUrl = $"http://127.0.0.1:{ServiceProcess.FreePort()}";
            var starting = new[]
            {
                ServiceProcess.StartAsync(Dll("Platform.SessionRegistry"), Data("registry"), quiet, grpcUrl: registryUrl),
                ServiceProcess.StartAsync(Dll("Platform.Launcher"), Data("launcher"), new Dictionary<string, string>(quiet)
                {
                    ["services__registry__grpc__0"] = registryUrl,
                    ["Launcher__AllowArbitraryCommands"] = "true",
                }),
                ServiceProcess.StartAsync(Dll("Platform.AgentMonitor"), Data("monitor"), new Dictionary<string, string>(quiet)
                {
                    ["services__registry__grpc__0"] = registryUrl,
                }),
            };
            try
            {
                await Task.WhenAll(starting);
            }
            finally
            {
                _services.AddRange(starting.Where(t => t.IsCompletedSuccessfully).Select(t => t.Result)); // stopped by DisposeAsync
            }
            var first = starting.Select(t => t.Result).ToArray();
            var (launcher, monitor) = (first[1], first[2]);
            var supervisor = await ServiceProcess.StartAsync(Dll("Platform.Supervisor"), Data("supervisor"), new Dictionary<string, string>(quiet)
            {
                ["services__registry__grpc__0"] = registryUrl,
                ["services__launcher__grpc__0"] = launcher.GrpcUrl,
                ["services__monitor__grpc__0"] = monitor.GrpcUrl,
            });
            _services.Add(supervisor);
            _supervisorUrl = supervisor.GrpcUrl;
            _channel = GrpcChannel.ForAddress(supervisor.GrpcUrl);
            _client = new Supervisor.V1.Supervisor.SupervisorClient(_channel);
        }

        /// <summary>One ApplyWorkloads call for all of them (as `platformctl apply -f` makes it), as the peers take
        /// one ecosystem file or one `supervisorctl update`.</summary>
        public override async Task AddAsync(IReadOnlyList<Managed> programs)
        {
            var response = await _client.ApplyWorkloadsAsync(new ApplyWorkloadsRequest
            {
                Workloads =
                {
                    programs.Select(p => new Workload
                    {
                        Name = p.Name,
                        Launch = new LaunchSpec { Process = new ProcessSpec { Executable = p.Executable, Args = { p.Args } } },
                        RestartPolicy = p.AtOnce ? new RestartPolicy { InitialBackoff = Duration.FromTimeSpan(TimeSpan.Zero), MaxRestarts = 1000 } : null, // like startretries: no limit in reach
                        StopGrace = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
                    }),
                },
            });
            if (response.Results.FirstOrDefault(r => r.Code != 0) is { } refused)
                throw new InvalidOperationException($"workload {refused.Name} was refused: {refused.Message}");
        }

        public override async Task RemoveAllAsync()
        {
            var names = (await _client.ListWorkloadsAsync(new ListWorkloadsRequest { PageSize = 1000 })).Workloads.Select(w => w.Name);
            await Task.WhenAll(names.Select(n => _client.DeleteWorkloadAsync(new DeleteWorkloadRequest { Name = n }).ResponseAsync));
        }

        /// <summary>platformctl as eng/install-platformctl.sh installs it (Native AOT; built here once), and beside
        /// it the JIT build (dotnet platformctl.dll).</summary>
        public override async Task<IReadOnlyList<(string, string[])>> ListCommandsAsync()
        {
            var endpoint = $"supervisor={_supervisorUrl}";
            var jit = (string[])["dotnet", Dll("platformctl"), "--endpoint", endpoint, "get", "workloads", "-o", "json"];
            var bin = Directory.CreateDirectory(Path.Combine(dir, "bin")).FullName;
            var script = Path.Combine(Path.GetDirectoryName(AppHostProcess.RepositoryRoot(typeof(PeersBench).Assembly) + "/")!, "eng", "install-platformctl.sh");
            var installed = await RunAsync(script, [bin], check: false);
            var native = Path.Combine(bin, "platformctl");
            if (!installed.Contains("(native)", StringComparison.Ordinal) || !File.Exists(native))
            {
                Console.WriteLine($"  no Native AOT build here ({installed.Trim()}); the row is the JIT build's");
                return [("", jit)];
            }
            return [("", [native, "--endpoint", endpoint, "get", "workloads", "-o", "json"]), ("the same with the JIT build (dotnet platformctl.dll)", jit)];
        }

        public override IReadOnlyList<int> Supervisors => [.. _services.Select(s => s.Pid)];

        public override async ValueTask DisposeAsync()
        {
            if (_channel is not null)
            {
                try
                {
                    await RemoveAllAsync();
                }
                catch (Grpc.Core.RpcException)
                {
                }
                _channel.Dispose();
            }
            for (var i = _services.Count - 1; i >= 0; i--) await _services[i].DisposeAsync();
        }
    }
}
