using System.CommandLine;
using System.CommandLine.Parsing;
using System.Reflection;
using Platform.Cli;

// platformctl: drives the platform from a shell (docs/platformctl.md). Every command is one function of a Context
// (the connection, the output format, Ctrl+C); failures end in one line on stderr and an exit code (ExitCode).
var endpoint = new Option<string?>("--endpoint") { Description = "The platform's gRPC address: one URL, or service=URL,... (default: PLATFORM_ENDPOINT, else the running AppHost's apphost.json)", Recursive = true };
var token = new Option<string?>("--token") { Description = "Bearer token (default: PLATFORM_TOKEN, else apphost.json's)", Recursive = true };
Option<string?> OutputOption() => new("--output", "-o") { Description = "Output format: json, yaml or wide", HelpName = "json|yaml|wide" };

var root = new RootCommand("platformctl: apply, inspect and follow the platform's workloads, instances, sessions and agents.");
root.Options.Add(endpoint);
root.Options.Add(token);

// apply -f FILE|-
var files = new Option<string[]>("--filename", "-f") { Description = "A YAML or JSON file of one or more workloads; - for stdin (repeatable)", Required = true, HelpName = "FILE|-" };
var applyOutput = OutputOption();
var apply = new Command("apply", "Create or update workloads from YAML or JSON (applying the same file again changes nothing)") { files, applyOutput };
apply.SetAction((p, ct) => Run(p, ct, applyOutput, c => WorkloadCommands.ApplyAsync(c, p.GetValue(files)!, Console.In)));
root.Subcommands.Add(apply);

// get KIND [NAME]
var kind = new Argument<string>("kind") { Description = "workloads, instances, sessions or targets" };
kind.CompletionSources.Add(GetCommands.Kinds);
var name = new Argument<string?>("name") { Description = "One of them by name or id (default: all)", Arity = ArgumentArity.ZeroOrOne };
var of = new Option<string?>("--workload", "-w") { Description = "Only those of this workload (instances, sessions, targets)" };
var getOutput = OutputOption();
var get = new Command("get", "List workloads, instances, sessions or targets (the monitor's verdicts), or show one") { kind, name, of, getOutput };
get.SetAction((p, ct) => Run(p, ct, getOutput, c => GetCommands.RunAsync(c, p.GetValue(kind)!, p.GetValue(name), p.GetValue(of))));
root.Subcommands.Add(get);

// describe workload NAME, delete workload NAME, restart workload NAME
Command OnWorkload(string verb, string description, Func<Context, string, Task<int>> body, bool output)
{
    var what = new Argument<string>("kind") { Description = "workload" };
    what.CompletionSources.Add("workload");
    var workloadName = new Argument<string>("name") { Description = "The workload's name" };
    var format = OutputOption();
    var command = new Command(verb, description) { what, workloadName };
    if (output) command.Options.Add(format);
    command.SetAction((p, ct) => Run(p, ct, output ? format : null, c =>
        GetCommands.Kind(p.GetValue(what)!) == "workloads" ? body(c, p.GetValue(workloadName)!)
            : throw new CliException(ExitCode.Usage, $"only workloads can be {verb}d: platformctl {verb} workload NAME")));
    return command;
}
root.Subcommands.Add(OnWorkload("describe", "Show a workload: spec, policy, phase, instance, the monitor's verdict, trace id and history", WorkloadCommands.DescribeAsync, true));
root.Subcommands.Add(OnWorkload("delete", "Stop a workload's instance and forget the workload", WorkloadCommands.DeleteAsync, false));
root.Subcommands.Add(OnWorkload("restart", "Restart a workload now (stop its tree, start a new generation)", WorkloadCommands.RestartAsync, true));

// launch [--workload W] -- CMD ARGS
var command = new Argument<string[]>("command") { Description = "The program and its arguments (after --)", Arity = ArgumentArity.OneOrMore };
var launchWorkload = new Option<string?>("--workload", "-w") { Description = "Workload the instance belongs to (default: the program's name)" };
var env = new Option<string[]>("--env", "-e") { Description = "NAME=VALUE for its environment (repeatable)" };
var launchOutput = OutputOption();
var launch = new Command("launch", "Start one unsupervised instance on the launcher: platformctl launch -- sleep 60") { launchWorkload, env, command, launchOutput };
launch.SetAction((p, ct) => Run(p, ct, launchOutput, c => InstanceCommands.LaunchAsync(c, p.GetValue(launchWorkload), p.GetValue(env) ?? [], p.GetValue(command)!)));
root.Subcommands.Add(launch);

// stop INSTANCE
var instance = new Argument<string>("instance") { Description = "The instance's id" };
var grace = new Option<TimeSpan?>("--grace") { Description = "Time between SIGTERM and SIGKILL (default: the instance's)", HelpName = "hh:mm:ss" };
var stopOutput = OutputOption();
var stop = new Command("stop", "Stop an instance and its whole process tree") { instance, grace, stopOutput };
stop.SetAction((p, ct) => Run(p, ct, stopOutput, c => InstanceCommands.StopAsync(c, p.GetValue(instance)!, p.GetValue(grace))));
root.Subcommands.Add(stop);

// logs WORKLOAD|INSTANCE [-f] [--tail N] [--previous]
var source = new Argument<string>("workload-or-instance") { Description = "A workload's name (its current instance) or an instance id" };
var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing new output until the instance exits or Ctrl+C" };
var tail = new Option<int>("--tail") { Description = "Only the last N lines of each stream (default: all)", DefaultValueFactory = _ => -1, HelpName = "N" };
var previous = new Option<bool>("--previous", "-p") { Description = "The workload's instance before the current one" };
var logs = new Command("logs", "Print an instance's output (stdout and stderr)") { source, follow, tail, previous };
logs.SetAction((p, ct) => Run(p, ct, null, c => InstanceCommands.LogsAsync(c, p.GetValue(source)!, p.GetValue(follow), p.GetValue(tail), p.GetValue(previous))));
root.Subcommands.Add(logs);

var watch = new Command("watch", "A live table of workloads and the monitor's verdicts, until Ctrl+C (one line per change in a pipe)");
watch.SetAction((p, ct) => Run(p, ct, null, WatchCommand.RunAsync));
root.Subcommands.Add(watch);

var statusOutput = OutputOption();
var status = new Command("status", "Each service's health, and what it reports degraded") { statusOutput };
status.SetAction((p, ct) => Run(p, ct, statusOutput, StatusCommand.RunAsync));
root.Subcommands.Add(status);

var versionOutput = OutputOption();
var version = new Command("version", "platformctl's version and the contracts it speaks") { versionOutput };
version.SetAction(p =>
{
    var v = typeof(Connection).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "?";
    const string contracts = "platform.registry.v1, platform.launcher.v1, platform.monitor.v1, platform.supervisor.v1";
    switch (p.GetValue(versionOutput))
    {
        case "json": Console.WriteLine($"{{\n  \"platformctl\": \"{v}\",\n  \"contracts\": \"{contracts}\"\n}}"); break;
        case "yaml": Console.WriteLine($"platformctl: {v}\ncontracts: {contracts}"); break;
        default: Console.WriteLine($"platformctl {v} (contracts {contracts})"); break;
    }
    return 0;
});
root.Subcommands.Add(version);

var shell = new Argument<string>("shell") { Description = "bash or zsh" };
shell.CompletionSources.Add("bash", "zsh");
var completion = new Command("completion", "Print a shell completion script: source <(platformctl completion bash)") { shell };
completion.SetAction(p => Completion.Print(p.GetValue(shell)!));
root.Subcommands.Add(completion);

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    // Exit code 2 for a wrong command line (System.CommandLine would say 1).
    foreach (var error in parsed.Errors) Console.Error.WriteLine($"platformctl: {error.Message}");
    Console.Error.WriteLine($"Run 'platformctl {string.Join(' ', CommandPath(parsed.CommandResult))} --help' for usage.".Replace("  ", " ", StringComparison.Ordinal));
    return ExitCode.Usage;
}
return await parsed.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });

static IEnumerable<string> CommandPath(CommandResult? result)
{
    var names = new Stack<string>();
    for (var r = result; r is not null && r.Command is not RootCommand; r = r.Parent as CommandResult) names.Push(r.Command.Name);
    return names;
}

// One command: find the platform, run, and turn a failure into its line and exit code.
async Task<int> Run(ParseResult p, CancellationToken ct, Option<string?>? format, Func<Context, Task<int>> body)
{
    try
    {
        var output = Output.ParseFormat(format is null ? null : p.GetValue(format));
        using var connection = Connection.Find(p.GetValue(endpoint), p.GetValue(token));
        return await body(new Context(connection, Output.Console(), output, ct));
    }
    catch (CliException e)
    {
        Console.Out.Flush();
        Console.Error.WriteLine($"platformctl: {e.Message}");
        return e.ExitCode;
    }
    catch (OperationCanceledException) when (ct.IsCancellationRequested)
    {
        return ExitCode.Ok; // Ctrl+C
    }
}
