using System.Text;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Cli.Tests;

/// <summary>The real AppHost (DCP, the four services) as a process with its own state directory, shared by a class.</summary>
public sealed class CliFixture : IAsyncLifetime
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);
    public readonly string StateDirectory = Directory.CreateTempSubdirectory("platformctl-test-").FullName;
    public readonly string Work = Directory.CreateTempSubdirectory("platformctl-work-").FullName;
    private AppHostProcess _appHost = null!;

    public AppHostState State { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        _appHost = AppHostProcess.Start(AppHostProcess.ProjectOutput(typeof(CliFixture).Assembly, "Platform.AppHost"), StateDirectory);
        State = await _appHost.WaitForAllServingAsync(Timeout);
    }

    public async Task DisposeAsync()
    {
        await _appHost.DisposeAsync();
        try { Directory.Delete(StateDirectory, recursive: true); } catch (IOException) { }
        try { Directory.Delete(Work, recursive: true); } catch (IOException) { }
    }

    /// <summary>platformctl as a shell would run it, its stdout a pipe, from this fixture's state (apphost.json).</summary>
    public Task<Run> RunAsync(params string[] args) => Cli.RunAsync(args, new Dictionary<string, string> { ["PLATFORM_STATE_DIR"] = StateDirectory });
}

public sealed record Run(int Code, string Out, string Err)
{
    public override string ToString() => $"exit {Code}\n--- stdout\n{Out}\n--- stderr\n{Err}";
}

/// <summary>Runs the built platformctl (dotnet platformctl.dll) through the platform's reaper.</summary>
public static class Cli
{
    public static readonly string Dll = AppHostProcess.ProjectOutput(typeof(Cli).Assembly, "platformctl");

    public static Dictionary<string, string> Environment(IReadOnlyDictionary<string, string> extra)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry e in System.Environment.GetEnvironmentVariables()) env[(string)e.Key] = (string?)e.Value ?? "";
        env.Remove("PLATFORM_ENDPOINT");
        env.Remove("PLATFORM_TOKEN");
        env.Remove("PLATFORM_STATE_DIR");
        foreach (var (k, v) in extra) env[k] = v;
        return env;
    }

    public static SpawnedProcess Start(string[] args, IReadOnlyDictionary<string, string> extra, bool stdin = false) =>
        ChildReaper.Shared.Spawn(new SpawnRequest("dotnet", [Dll, .. args], Environment(extra), Path.GetTempPath(), StdioTarget.Pipe, StdioTarget.Pipe) { StdinPipe = stdin });

    public static async Task<Run> RunAsync(string[] args, IReadOnlyDictionary<string, string> extra, string? input = null)
    {
        var process = Start(args, extra, stdin: input is not null);
        if (input is not null)
        {
            await process.StandardInput!.WriteAsync(Encoding.UTF8.GetBytes(input));
            await process.StandardInput.DisposeAsync();
        }
        var stdout = new StreamReader(process.StandardOutput!).ReadToEndAsync();
        var stderr = new StreamReader(process.StandardError!).ReadToEndAsync();
        var exit = await process.Exited.WaitAsync(TimeSpan.FromSeconds(60));
        return new Run(exit.Code ?? 128 + (exit.Signal ?? 0), await stdout, await stderr);
    }
}
