using System.Diagnostics;
using Grpc.Core.Interceptors;
using Grpc.Health.V1;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Bench;

/// <summary>
/// The platform's images (eng/build-images.sh; --build builds them first, on the local Debian base): each image's size,
/// each service's container start to SERVING (median of 3, the registry already up for the others), and the
/// Launcher's RSS in its container with 300 instances. Needs a Docker engine (eng/docker.sh).
/// </summary>
public static class ImagesBench
{
    private const string Token = "bench-token";
    private static readonly (string Service, int Port)[] Services = [("registry", 5101), ("launcher", 5111), ("monitor", 5121), ("supervisor", 5131)];

    public static async Task<int> RunAsync(string[] args)
    {
        var root = Platform.Testing.AppHostProcess.RepositoryRoot(typeof(ImagesBench).Assembly);
        if (args.Contains("--build")) await RunAsync(Path.Combine(root, "eng", "build-images.sh"), ["--local-base"], TimeSpan.FromMinutes(30));
        var rows = new List<(string Metric, string Others, string Ours, string Target, bool Met)>();
        var id = Guid.NewGuid().ToString("N")[..6];
        var network = $"platform-bench-{id}";
        var started = new List<string>();
        Console.WriteLine($"Images benchmark: {Environment.ProcessorCount} cores");
        try
        {
            async Task<double> SizeAsync(string image, bool required = true) =>
                double.TryParse((await RunAsync("docker", ["image", "inspect", "-f", "{{.Size}}", image], check: required)).Trim(),
                    System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var bytes) ? bytes : 0;
            var based = await SizeAsync("platform/base:bookworm", required: false); // 0 on Microsoft's base, which is not local
            foreach (var (service, _) in Services)
                rows.Add(($"image size: {service} (MB; of which the base)", "-", $"{await SizeAsync($"platform/{service}:latest") / 1e6:0.0} ({based / 1e6:0.0})", "-", true));
            await RunAsync("docker", ["network", "create", network]);
            async Task<(string Name, string Url, TimeSpan Serving)> StartAsync(string service, int port, string alias, params string[] env)
            {
                var name = $"{network}-{alias}";
                started.Add(name);
                var arguments = new List<string>
                {
                    "run", "-d", "--name", name, "--network", network, "--network-alias", alias, "-p", $"127.0.0.1::{port}",
                    "-e", $"Kestrel__Endpoints__grpc__Url=http://0.0.0.0:{port}", "-e", $"Kestrel__Endpoints__http__Url=http://0.0.0.0:{port + 1}",
                    "-e", $"Platform__Token={Token}", "-e", "Platform__AgentToken=bench-agent-token", "-e", "services__registry__grpc__0=http://registry:5101",
                };
                foreach (var e in env) arguments.AddRange(["-e", e]);
                arguments.Add($"platform/{service}:latest");
                var clock = Stopwatch.StartNew();
                await RunAsync("docker", arguments);
                var mapped = (await RunAsync("docker", ["port", name, $"{port}/tcp"])).Trim().Split('\n')[0];
                var url = $"http://{mapped}";
                while (await AppHostProcess.CheckHealthAsync(url) != HealthCheckResponse.Types.ServingStatus.Serving)
                {
                    if (clock.Elapsed > TimeSpan.FromSeconds(60)) throw new InvalidOperationException($"{service} not SERVING: {await RunAsync("docker", ["logs", name], check: false)}");
                    await Task.Delay(10);
                }
                return (name, url, clock.Elapsed);
            }
            async Task RemoveAsync(string name)
            {
                await RunAsync("docker", ["rm", "-f", name], check: false);
                started.Remove(name);
            }

            // Start to SERVING: the registry alone, then each other service with the registry up; median of 3.
            var registry = await StartAsync("registry", 5101, "registry");
            foreach (var (service, port) in Services)
            {
                var times = new List<double>();
                for (var i = 0; i < 3; i++)
                {
                    var (name, _, serving) = service == "registry" && i == 0 ? registry : await StartAsync(service, port, service == "registry" ? $"registry-{i}" : $"{service}-{i}");
                    times.Add(serving.TotalSeconds);
                    if (name != registry.Name) await RemoveAsync(name);
                }
                times.Sort();
                rows.Add(($"container start -> SERVING: {service} (s, median of 3)", "-", $"{times[1]:0.00}", "-", true));
            }

            // The Launcher with 300 instances of a template, its RSS read from /proc on the host (the container's main process).
            var launcher = await StartAsync("launcher", 5111, "launcher", "Launcher__Templates__sleeper__Executable=/bin/sleep", "Launcher__Templates__sleeper__Args__0=600");
            using var channel = PlatformChannel.Create(launcher.Url, Token);
            var client = new Launcher.V1.Launcher.LauncherClient(channel.Intercept(DefaultDeadline.Minute));
            for (var i = 0; i < 300; i += 50)
                await Task.WhenAll(Enumerable.Range(i, 50).Select(n => client.LaunchAsync(new LaunchRequest { Template = "sleeper", Workload = $"w{n}", RequestId = $"bench-{n}" }).ResponseAsync));
            await Task.Delay(5000);
            var pid = int.Parse((await RunAsync("docker", ["inspect", "-f", "{{.State.Pid}}", launcher.Name])).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            var running = (await client.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000 })).Instances.Count;
            var rss = Measure.Rss(pid);
            rows.Add(($"Launcher RSS in its container, {running} instances (MiB)", "-", $"{rss:0.0}", "<= 60", rss <= 60 && running == 300));
        }
        finally
        {
            foreach (var name in started.ToList()) await RunAsync("docker", ["rm", "-f", name], check: false);
            await RunAsync("docker", ["network", "rm", network], check: false);
        }
        return Table.Print("-", rows);
    }

    private static async Task<string> RunAsync(string exe, IReadOnlyList<string> args, TimeSpan? timeout = null, bool check = true)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables()) env[(string)e.Key] = (string?)e.Value ?? "";
        var process = ChildReaper.Shared.Spawn(new SpawnRequest(exe, args, env, null, StdioTarget.Pipe, StdioTarget.Pipe));
        using var stdout = new StreamReader(process.StandardOutput!);
        using var stderr = new StreamReader(process.StandardError!);
        var output = stdout.ReadToEndAsync();
        var error = stderr.ReadToEndAsync();
        var status = await process.Exited.WaitAsync(timeout ?? TimeSpan.FromMinutes(3));
        if (check && status.Code != 0) throw new InvalidOperationException($"{exe} {string.Join(' ', args)} failed ({status}): {await output}{await error}");
        return await output;
    }

    private static Task<string> RunAsync(string exe, IReadOnlyList<string> args, bool check) => RunAsync(exe, args, null, check);
}
