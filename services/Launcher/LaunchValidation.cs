using System.Text.RegularExpressions;
using Grpc.Core;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.ServiceDefaults;

namespace Platform.Launcher;

/// <summary>
/// Turns a LaunchRequest into a <see cref="ResolvedLaunch"/> or a precise status: INVALID_ARGUMENT (with the field),
/// NOT_FOUND (template, executable), PERMISSION_DENIED (arbitrary commands off, file not executable). Everything is
/// checked before anything starts.
/// </summary>
public static partial class LaunchValidation
{
    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex EnvName();

    public static ResolvedLaunch Resolve(LaunchRequest request, LauncherOptions options)
    {
        var v = new Violations();
        string executable;
        List<string> args;
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        string? workingDirectory;
        string template = "";
        var keepDescendants = request.KeepDescendants;

        switch (request.SourceCase)
        {
            case LaunchRequest.SourceOneofCase.Template:
                if (!options.Templates.TryGetValue(request.Template, out var t))
                    throw PlatformException.NotFound("template", request.Template);
                template = request.Template;
                executable = t.Executable;
                args = [.. t.Args];
                foreach (var (key, value) in t.Env) env[key] = value;
                workingDirectory = t.WorkingDirectory;
                keepDescendants |= t.KeepDescendants;
                break;
            case LaunchRequest.SourceOneofCase.Process:
                if (!options.AllowArbitraryCommands)
                    throw PlatformException.PermissionDenied("this launcher runs only its configured templates (Launcher:AllowArbitraryCommands is false)");
                executable = request.Process.Executable;
                args = [.. request.Process.Args];
                foreach (var (key, value) in request.Process.Env) env[key] = value;
                workingDirectory = request.Process.WorkingDirectory.Length > 0 ? request.Process.WorkingDirectory : null;
                if (executable.Length == 0) v.Add("process.executable", "must not be empty");
                break;
            default:
                throw PlatformException.Invalid("source", "give a template name or a process spec");
        }

        foreach (var (key, value) in request.Env) env[key] = value;
        // A sane base the child can count on.
        env.TryAdd("PATH", System.Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/bin:/usr/bin:/bin");
        env.TryAdd("HOME", System.Environment.GetEnvironmentVariable("HOME") ?? "/");

        if (args.Count > LaunchLimits.Args) v.Add("args", $"must have at most {LaunchLimits.Args} entries (got {args.Count})");
        if (args.Any(a => a.Length > LaunchLimits.ArgLength)) v.Add("args", $"each must be at most {LaunchLimits.ArgLength} characters");
        if (args.Sum(a => (long)a.Length) > LaunchLimits.ArgsTotal) v.Add("args", $"must total at most {LaunchLimits.ArgsTotal} characters");
        if (args.Any(a => a.Contains('\0'))) v.Add("args", "must not contain NUL characters");
        if (env.Count > LaunchLimits.EnvVars) v.Add("env", $"must have at most {LaunchLimits.EnvVars} variables");
        foreach (var (key, value) in env)
        {
            if (!EnvName().IsMatch(key)) v.Add($"env[{key}]", "name must be letters, digits and '_', not starting with a digit");
            if (value.Length > LaunchLimits.EnvValueLength || value.Contains('\0')) v.Add($"env[{key}]", $"value must be at most {LaunchLimits.EnvValueLength} characters, without NUL");
        }
        if (workingDirectory is not null && !Directory.Exists(workingDirectory))
            v.Add("process.working_directory", $"'{workingDirectory}' does not exist");
        if (request.Workload.Length > 0) WorkloadName.Check(v, "workload", request.Workload);
        if (request.Labels.Count > LaunchLimits.Labels) v.Add("labels", $"must have at most {LaunchLimits.Labels} entries");
        if (request.RequestId.Length > LaunchLimits.RequestIdLength) v.Add("request_id", $"must be at most {LaunchLimits.RequestIdLength} characters");
        var grace = options.DefaultStopGrace;
        if (request.StopGrace is { } invalid && !Durations.IsValid(invalid)) v.Add("stop_grace", Durations.NotADuration);
        else if (request.StopGrace is { } g)
        {
            grace = g.ToTimeSpan();
            if (grace < TimeSpan.Zero || grace > LaunchLimits.MaxStopGrace) v.Add("stop_grace", $"must be between 0 and {LaunchLimits.MaxStopGrace.TotalMinutes:0} minutes");
        }
        v.ThrowIfAny();

        var path = ResolveExecutable(executable, env);
        // Without a workload, the template's or the executable's name made into one ("python3.11" -> "python3-11").
        var workload = request.Workload.Length > 0 ? request.Workload : WorkloadName.From(template.Length > 0 ? template : Path.GetFileName(path));
        return new ResolvedLaunch(path, args, env, workingDirectory, workload, template, request.Labels, grace, request.RequestId, request.SessionAttributes)
        {
            KeepDescendants = keepDescendants,
        };
    }

    /// <summary>The executable's path: NOT_FOUND when it does not exist, PERMISSION_DENIED when it cannot be run.</summary>
    private static string ResolveExecutable(string executable, IReadOnlyDictionary<string, string> env)
    {
        string path;
        try
        {
            path = ChildReaper.Resolve(executable, env);
        }
        catch (SpawnException e)
        {
            throw PlatformException.NotFound(e.Message);
        }
        if (Directory.Exists(path)) throw PlatformException.PermissionDenied($"'{path}' is a directory");
        if (!File.Exists(path)) throw PlatformException.NotFound($"executable '{path}' was not found");
        const UnixFileMode anyExecute = UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        if ((File.GetUnixFileMode(path) & anyExecute) == 0)
            throw PlatformException.PermissionDenied($"'{path}' is not executable");
        return path;
    }
}
