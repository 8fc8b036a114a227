using System.Text.Json;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Cli.Tests;

/// <summary>platformctl as a process against the real platform (one AppHost for the class).</summary>
public sealed class PlatformctlTests(CliFixture platform) : IClassFixture<CliFixture>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private static void Ok(Run run)
    {
        Assert.True(run.Code == 0, run.ToString());
        Assert.Equal("", run.Err);
    }

    /// <summary>One line, no stack trace, the exit code asked for.</summary>
    private static void Fails(Run run, int code, string says)
    {
        Assert.True(run.Code == code, $"expected exit {code}: {run}");
        Assert.Contains(says, run.Err);
        Assert.DoesNotContain("   at ", run.Err);
        Assert.DoesNotContain("Exception", run.Err);
    }

    private async Task<JsonElement> WorkloadAsync(string name)
    {
        var run = await platform.RunAsync("get", "workload", name, "-o", "json");
        Ok(run);
        return JsonDocument.Parse(run.Out).RootElement.Clone();
    }

    private async Task<JsonElement> EventuallyAsync(string name, Func<JsonElement, bool> until, string what) =>
        await Eventually.ValueAsync(() => WorkloadAsync(name), until, Timeout, what);

    private static long Generation(JsonElement w) =>
        w.TryGetProperty("status", out var s) && s.TryGetProperty("generation", out var g) ? long.Parse(g.GetString()!, System.Globalization.CultureInfo.InvariantCulture) : 0;

    private static string Phase(JsonElement w) => w.TryGetProperty("status", out var s) && s.TryGetProperty("phase", out var p) ? p.GetString()! : "";

    [Fact]
    public async Task Apply_from_a_YAML_file_and_JSON_on_stdin_twice_changes_nothing_and_get_prints_every_format()
    {
        var file = Path.Combine(platform.Work, "workloads.yaml");
        await File.WriteAllTextAsync(file, """
            # two workloads in two documents
            name: cli-sleeper
            launch:
              process:
                executable: /bin/sh
                args: [-c, "echo started; exec sleep 300"]
            restartPolicy:
              mode: on-failure
              initialBackoff: 500ms
            labels:
              team: cli
            ---
            name: cli-other
            launch: {process: {executable: /bin/sleep, args: ["300"]}}
            stopGrace: 1s
            """);
        var first = await platform.RunAsync("apply", "-f", file);
        Ok(first);
        Assert.Equal("workload/cli-sleeper created\nworkload/cli-other created\n", first.Out);
        var again = await platform.RunAsync("apply", "-f", file);
        Ok(again);
        Assert.Equal("workload/cli-sleeper unchanged\nworkload/cli-other unchanged\n", again.Out);

        const string json = """[{"name": "cli-json", "launch": {"process": {"executable": "/bin/sleep", "args": ["300"]}}}]""";
        var env = new Dictionary<string, string> { ["PLATFORM_STATE_DIR"] = platform.StateDirectory };
        var piped = await Cli.RunAsync(["apply", "-f", "-"], env, json);
        Ok(piped);
        Assert.Equal("workload/cli-json created\n", piped.Out);
        Ok(await Cli.RunAsync(["apply", "-f", "-"], env, json));
        Assert.Equal("workload/cli-json unchanged\n", (await Cli.RunAsync(["apply", "-f", "-"], env, json)).Out);

        // What was applied is what runs: the spec as given, running.
        var sleeper = await EventuallyAsync("cli-sleeper", w => Phase(w) == "RUNNING", "cli-sleeper running");
        Assert.Equal("ON_FAILURE", sleeper.GetProperty("restartPolicy").GetProperty("mode").GetString());
        Assert.Equal("0.500s", sleeper.GetProperty("restartPolicy").GetProperty("initialBackoff").GetString());
        Assert.Equal("cli", sleeper.GetProperty("labels").GetProperty("team").GetString());
        var pid = int.Parse(sleeper.GetProperty("status").GetProperty("pid").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
        Assert.NotNull(ProcFs.Identify(pid));
        await EventuallyAsync("cli-other", w => Phase(w) == "RUNNING", "cli-other running");
        Assert.Equal("1s", (await WorkloadAsync("cli-other")).GetProperty("stopGrace").GetString());

        // A table in a pipe: no colour, every column starts where its header does.
        var table = await platform.RunAsync("get", "workloads");
        Ok(table);
        Assert.DoesNotContain('\u001b', table.Out);
        var lines = table.Out.TrimEnd('\n').Split('\n');
        Assert.Equal(["NAME", "PHASE", "GEN", "RESTARTS", "PID", "AGE"], lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        var row = lines.Single(l => l.StartsWith("cli-sleeper ", StringComparison.Ordinal));
        Assert.Equal(lines[0].IndexOf("PHASE", StringComparison.Ordinal), row.IndexOf("RUNNING", StringComparison.Ordinal));
        Assert.Equal(lines[0].IndexOf("PID", StringComparison.Ordinal), row.IndexOf(pid.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal));

        // JSON is the contract's; YAML the same; wide has more columns; the other kinds list what the services hold.
        var listed = await platform.RunAsync("get", "workloads", "-o", "json");
        Ok(listed);
        var names = JsonDocument.Parse(listed.Out).RootElement.GetProperty("workloads").EnumerateArray().Select(w => w.GetProperty("name").GetString()).ToList();
        Assert.Subset(names.ToHashSet(), new HashSet<string?> { "cli-sleeper", "cli-other", "cli-json" });
        var yaml = await platform.RunAsync("get", "workload", "cli-sleeper", "-o", "yaml");
        Ok(yaml);
        Assert.Contains("name: cli-sleeper\n", yaml.Out);
        Assert.Contains("  mode: ON_FAILURE\n", yaml.Out);
        // The YAML reads back as the same spec: applying it is no change.
        var roundTrip = await Cli.RunAsync(["apply", "-f", "-"], env, yaml.Out);
        Ok(roundTrip);
        Assert.Equal("workload/cli-sleeper unchanged\n", roundTrip.Out);
        var wide = await platform.RunAsync("get", "workloads", "-o", "wide");
        Ok(wide);
        Assert.Contains("INSTANCE", wide.Out.Split('\n')[0]);
        Assert.Contains(sleeper.GetProperty("status").GetProperty("instanceId").GetString()!, wide.Out);

        var instances = await platform.RunAsync("get", "instances", "-w", "cli-sleeper");
        Ok(instances);
        Assert.Contains(sleeper.GetProperty("status").GetProperty("instanceId").GetString()!, instances.Out);
        var sessions = await platform.RunAsync("get", "sessions", "-w", "cli-sleeper", "-o", "json");
        Ok(sessions);
        Assert.Contains(JsonDocument.Parse(sessions.Out).RootElement.GetProperty("sessions").EnumerateArray(),
            s => s.GetProperty("instance").GetString() == sleeper.GetProperty("status").GetProperty("instanceId").GetString() && s.GetProperty("state").GetString() == "ACTIVE");
        Ok(await platform.RunAsync("get", "targets"));

        var status = await platform.RunAsync("status");
        Ok(status);
        foreach (var service in new[] { "registry", "launcher", "monitor", "supervisor" })
            Assert.Matches($"(?m)^{service} +http://127\\.0\\.0\\.1:\\d+ +SERVING", status.Out);
    }

    [Fact]
    public async Task Describe_shows_spec_phase_and_the_history_of_starts_and_exits_and_restart_starts_a_new_generation()
    {
        var file = Path.Combine(platform.Work, "crasher.yaml");
        await File.WriteAllTextAsync(file, """
            name: cli-crasher
            launch:
              process: {executable: /bin/sh, args: [-c, "echo crashing; sleep 0.3; exit 3"]}
            restartPolicy: {initialBackoff: 200ms, maxBackoff: 400ms, maxRestarts: 100}
            """);
        Ok(await platform.RunAsync("apply", "-f", file));
        await EventuallyAsync("cli-crasher", w => Generation(w) >= 3, "cli-crasher at generation 3");

        var described = await platform.RunAsync("describe", "workload", "cli-crasher");
        Ok(described);
        Assert.Contains("Name:           cli-crasher", described.Out);
        Assert.Contains("Launch:         /bin/sh -c 'echo crashing; sleep 0.3; exit 3'", described.Out);
        Assert.Contains("Restart policy: always; backoff 200ms x2 up to 400ms", described.Out);
        Assert.Matches(@"Trace id: +[0-9a-f]{32}", described.Out);
        var history = described.Out[described.Out.IndexOf("History (newest first", StringComparison.Ordinal)..].Split('\n');
        Assert.Matches("TIME +AGE +GEN +EVENT +DETAIL", history[1]);
        Assert.Contains(history, l => l.Contains(" exited ", StringComparison.Ordinal) && l.Contains("exited with code 3", StringComparison.Ordinal));
        Assert.Contains(history, l => l.Contains(" 1 ", StringComparison.Ordinal) && l.Contains(" started ", StringComparison.Ordinal) && l.Contains("created", StringComparison.Ordinal));

        // Restart by hand of a steady one: generation + 1, said in one line.
        Ok(await Cli.RunAsync(["apply", "-f", "-"], new Dictionary<string, string> { ["PLATFORM_STATE_DIR"] = platform.StateDirectory },
            """{"name": "cli-steady", "launch": {"process": {"executable": "/bin/sleep", "args": ["300"]}}}"""));
        await EventuallyAsync("cli-steady", w => Phase(w) == "RUNNING", "cli-steady running");
        var restarted = await platform.RunAsync("restart", "workload", "cli-steady");
        Ok(restarted);
        Assert.StartsWith("workload/cli-steady restarted (generation 2", restarted.Out);
        var json = await platform.RunAsync("describe", "workload", "cli-steady", "-o", "json");
        Ok(json);
        Assert.Equal("cli-steady", JsonDocument.Parse(json.Out).RootElement.GetProperty("name").GetString());
        Ok(await platform.RunAsync("delete", "workload", "cli-crasher"));
    }

    [Fact]
    public async Task Logs_prints_and_follows_output_and_launch_stop_and_delete_do_what_they_say()
    {
        Ok(await Cli.RunAsync(["apply", "-f", "-"], new Dictionary<string, string> { ["PLATFORM_STATE_DIR"] = platform.StateDirectory }, """
            name: cli-ticker
            launch: {process: {executable: /bin/sh, args: [-c, "echo to-stderr >&2; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done"]}}
            """));
        await EventuallyAsync("cli-ticker", w => Phase(w) == "RUNNING", "cli-ticker running");
        var printed = await Eventually.ValueAsync(() => platform.RunAsync("logs", "cli-ticker"), r => r.Out.Contains("tick 2\n", StringComparison.Ordinal), Timeout, "two ticks");
        Ok(printed);
        Assert.Contains("to-stderr\n", printed.Out);
        Ok(await platform.RunAsync("logs", "cli-ticker", "--tail", "1"));

        // -f: lines written after the command started arrive while it runs.
        var follow = Cli.Start(["logs", "cli-ticker", "-f", "--tail", "1"], new Dictionary<string, string> { ["PLATFORM_STATE_DIR"] = platform.StateDirectory });
        var reader = new StreamReader(follow.StandardOutput!);
        var first = await reader.ReadLineAsync().WaitAsync(Timeout);
        var n = int.Parse(first!.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        for (var expected = n + 1; expected <= n + 3; expected++)
        {
            string? line;
            do line = await reader.ReadLineAsync().WaitAsync(Timeout);
            while (line == "to-stderr");
            Assert.Equal($"tick {expected}", line);
        }
        ProcessTree.Signal(follow.Identity, 2); // Ctrl+C
        var stopped = await follow.Exited.WaitAsync(Timeout);
        Assert.Equal(0, stopped.Code);

        // Launch by hand, then stop: the tree is gone.
        var launched = await platform.RunAsync("launch", "-w", "cli-adhoc", "--", "/bin/sh", "-c", "sleep 300 & exec sleep 300");
        Ok(launched);
        Assert.Matches("^instance/[0-9A-Z]{26} launched \\(workload cli-adhoc, pid \\d+\\)\n$", launched.Out);
        var id = launched.Out.Split(' ')[0]["instance/".Length..];
        var pid = int.Parse(launched.Out.Split("pid ")[1].TrimEnd(')', '\n'), System.Globalization.CultureInfo.InvariantCulture);
        var stop = await platform.RunAsync("stop", id);
        Ok(stop);
        Assert.StartsWith($"instance/{id} stopped", stop.Out);
        Assert.Null(ProcFs.Identify(pid));
        Fails(await platform.RunAsync("stop", "01ARZ3NDEKTSV4RRFFQ69G5FAV"), ExitCode.NotFound, "01ARZ3NDEKTSV4RRFFQ69G5FAV");

        // Delete: the workload's process is stopped and the name is gone.
        var ticker = await WorkloadAsync("cli-ticker");
        var tickerPid = int.Parse(ticker.GetProperty("status").GetProperty("pid").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
        var deleted = await platform.RunAsync("delete", "workload", "cli-ticker");
        Ok(deleted);
        Assert.Equal("workload/cli-ticker deleted\n", deleted.Out);
        Assert.Null(ProcFs.Identify(tickerPid));
        Fails(await platform.RunAsync("get", "workload", "cli-ticker"), ExitCode.NotFound, "cli-ticker");
    }

    [Fact]
    public async Task Watch_in_a_pipe_prints_a_line_per_change_until_ctrl_c()
    {
        var env = new Dictionary<string, string> { ["PLATFORM_STATE_DIR"] = platform.StateDirectory };
        var watch = Cli.Start(["watch"], env);
        var lines = new List<string>();
        var reader = new StreamReader(watch.StandardOutput!);
        async Task<string> UntilAsync(string contains)
        {
            while (true)
            {
                var line = await reader.ReadLineAsync().WaitAsync(Timeout) ?? throw new InvalidOperationException($"watch ended: {string.Join("\n", lines)}");
                lines.Add(line);
                if (line.Contains(contains, StringComparison.Ordinal)) return line;
            }
        }
        Ok(await Cli.RunAsync(["apply", "-f", "-"], env, """{"name": "cli-watched", "launch": {"process": {"executable": "/bin/sleep", "args": ["300"]}}}"""));
        Assert.Matches(@"^\d\d:\d\d:\d\d workload/cli-watched RUNNING generation 1 pid \d+ restarts 0$", await UntilAsync("workload/cli-watched RUNNING"));
        Ok(await platform.RunAsync("restart", "workload", "cli-watched"));
        await UntilAsync("workload/cli-watched RUNNING generation 2");
        Ok(await platform.RunAsync("delete", "workload", "cli-watched"));
        await UntilAsync("workload/cli-watched deleted");
        ProcessTree.Signal(watch.Identity, 2); // Ctrl+C
        Assert.Equal(0, (await watch.Exited.WaitAsync(Timeout)).Code);
    }

    [Fact]
    public async Task Each_failure_is_one_line_with_its_exit_code()
    {
        Fails(await platform.RunAsync("get", "workload", "no-such-workload"), ExitCode.NotFound, "workload 'no-such-workload' was not found");
        Fails(await platform.RunAsync("describe", "workload", "no-such-workload"), ExitCode.NotFound, "no-such-workload");
        Fails(await platform.RunAsync("logs", "no-such-workload"), ExitCode.NotFound, "no-such-workload");

        Fails(await platform.RunAsync("get"), ExitCode.Usage, "platformctl:");
        Fails(await platform.RunAsync("get", "gadgets"), ExitCode.Usage, "'gadgets' is not something to get");
        Fails(await platform.RunAsync("apply"), ExitCode.Usage, "--filename");
        Fails(await platform.RunAsync("frobnicate"), ExitCode.Usage, "frobnicate");
        Fails(await platform.RunAsync("get", "workloads", "-o", "xml"), ExitCode.Usage, "json, yaml and wide");

        Fails(await platform.RunAsync("--token", "not-the-token", "get", "workloads"), ExitCode.Failed, "not authenticated");
        Fails(await Cli.RunAsync(["get", "workloads"], new Dictionary<string, string> { ["PLATFORM_ENDPOINT"] = "http://127.0.0.1:1" }), ExitCode.Unreachable,
            "cannot reach the supervisor at http://127.0.0.1:1");
        var empty = Directory.CreateTempSubdirectory("platformctl-none-").FullName;
        Fails(await Cli.RunAsync(["get", "workloads"], new Dictionary<string, string> { ["PLATFORM_STATE_DIR"] = empty }), ExitCode.Unreachable,
            "no platform found: start one with 'dotnet run --project AppHost'");
        Directory.Delete(empty);

        // Bad manifests: where, and what is wrong; nothing applied.
        var env = new Dictionary<string, string> { ["PLATFORM_STATE_DIR"] = platform.StateDirectory };
        Fails(await Cli.RunAsync(["apply", "-f", "-"], env, "name: cli-bad\nlaunch: {process: {executable: /bin/true}}\nrestartPolicy: {mode: sometimes}\n"),
            ExitCode.Failed, "stdin:3: workload.restartPolicy.mode is one of always, on-failure, never, not 'sometimes'");
        Fails(await Cli.RunAsync(["apply", "-f", "-"], env, "name: cli-bad\nlunch: {}\n"), ExitCode.Failed, "stdin:2: unknown field 'lunch' in workload");
        Fails(await Cli.RunAsync(["apply", "-f", "-"], env, "name: cli-bad\nstopGrace: soon\n"), ExitCode.Failed, "stdin:2: workload.stopGrace is not a duration");
        Fails(await Cli.RunAsync(["apply", "-f", "-"], env, "name: [unclosed\n"), ExitCode.Failed, "stdin:");
        Fails(await platform.RunAsync("apply", "-f", "/nonexistent/file.yaml"), ExitCode.Failed, "cannot read /nonexistent/file.yaml");
        // The supervisor's own validation, in its words.
        Fails(await Cli.RunAsync(["apply", "-f", "-"], env, "name: Not_A_Name\nlaunch: {process: {executable: /bin/true}}\n"), ExitCode.Failed, "invalid:");
        Fails(await platform.RunAsync("get", "workload", "cli-bad"), ExitCode.NotFound, "cli-bad");
    }

    [Fact]
    public async Task Bash_completion_completes_commands_and_kinds()
    {
        var bin = Directory.CreateTempSubdirectory("platformctl-bin-").FullName;
        var wrapper = Path.Combine(bin, "platformctl");
        await File.WriteAllTextAsync(wrapper, $"#!/bin/sh\nexec dotnet {Cli.Dll} \"$@\"\n");
        File.SetUnixFileMode(wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        const string script = """
            source <(platformctl completion bash)
            COMP_LINE="platformctl get w"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(platformctl get w); COMP_CWORD=2
            _platformctl_complete; printf '%s\n' "${COMPREPLY[@]}"
            COMP_LINE="platformctl desc"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(platformctl desc); COMP_CWORD=1
            _platformctl_complete; printf '%s\n' "${COMPREPLY[@]}"
            """;
        var process = ChildReaper.Shared.Spawn(new SpawnRequest("/bin/bash", ["-c", script],
            Cli.Environment(new Dictionary<string, string> { ["PATH"] = $"{bin}:{Environment.GetEnvironmentVariable("PATH")}" }), bin, StdioTarget.Pipe, StdioTarget.Pipe));
        var output = await new StreamReader(process.StandardOutput!).ReadToEndAsync();
        await process.Exited.WaitAsync(Timeout);
        Directory.Delete(bin, recursive: true);
        Assert.Equal("workloads\ndescribe\n", output);
    }
}
