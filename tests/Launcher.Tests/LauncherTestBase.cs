using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.DependencyInjection;
using Platform.Launcher.V1;
using Platform.ProcessControl;
using Platform.Testing;

namespace Platform.Launcher.Tests;

public abstract class LauncherTestBase : IAsyncLifetime
{
    protected static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);
    protected readonly string DataDirectory = Directory.CreateTempSubdirectory("launcher-test-").FullName;
    protected InProcessService Host = null!;
    protected V1.Launcher.LauncherClient Client = null!;

    protected virtual bool AllowArbitraryCommands => true;

    /// <summary>Templates every test host knows.</summary>
    protected static readonly Dictionary<string, TemplateOptions> Templates = new()
    {
        ["sleeper"] = new() { Executable = "sleep", Args = ["300"] },
        ["tree"] = new() { Executable = "/bin/sh", Args = ["-c", "sleep 300 & setsid sleep 301 & sh -c 'sleep 302 & wait' & wait"] },
        ["stubborn"] = new() { Executable = "/bin/sh", Args = ["-c", "trap '' TERM; sleep 300 & wait"] },
        ["chatty"] = new() { Executable = "/bin/sh", Args = ["-c", "for i in 1 2 3; do echo out $i; echo err $i >&2; done; echo \"$GREETING $PLATFORM_INSTANCE_ID\"; exec sleep 300"], Env = new() { ["GREETING"] = "hello" } },
        ["exit3"] = new() { Executable = "/bin/sh", Args = ["-c", "sleep 0.2; exit 3"] },
    };

    /// <summary>Settings of one test class on top of the common ones.</summary>
    protected virtual void Configure(LauncherOptions options)
    {
    }

    /// <summary>Headers of the clean-up calls (a bearer token where authentication is on).</summary>
    protected virtual Metadata? CleanupHeaders => null;

    /// <summary>Configuration of one test class (set before the launcher is added).</summary>
    protected virtual void Configure(Microsoft.Extensions.Configuration.IConfiguration configuration)
    {
    }

    public virtual async Task InitializeAsync()
    {
        Host = await InProcessService.StartAsync(DataDirectory, builder =>
        {
            Configure(builder.Configuration);
            builder.AddLauncher();
            builder.Services.Configure<LauncherOptions>(o =>
            {
                o.DataDirectory = DataDirectory;
                o.AllowArbitraryCommands = AllowArbitraryCommands;
                foreach (var (name, template) in Templates) o.Templates[name] = template;
                Configure(o);
            });
        }, app => app.MapLauncher());
        Client = new V1.Launcher.LauncherClient(Host.NewChannel().Intercept(DefaultDeadline.Minute));
    }

    public virtual async Task DisposeAsync()
    {
        // Leave nothing running: stop every instance the test started.
        foreach (var instance in (await Client.ListInstancesAsync(new ListInstancesRequest { State = Instance.Types.State.Running, PageSize = 1000 }, CleanupHeaders)).Instances)
            await Client.StopInstanceAsync(new StopInstanceRequest { Id = instance.Id, Grace = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.Zero) }, CleanupHeaders);
        await Host.DisposeAsync();
        try { Directory.Delete(DataDirectory, recursive: true); } catch (IOException) { }
    }

    protected Task<Instance> LaunchAsync(string template, string requestId = "") =>
        Client.LaunchAsync(new LaunchRequest { Template = template, RequestId = requestId }).ResponseAsync;

    /// <summary>Waits until the instance's tree has <paramref name="size"/> processes and returns it.</summary>
    protected static async Task<List<ProcessIdentity>> TreeAsync(Instance instance, int size)
    {
        var root = ProcFs.Identify((int)instance.Pid)!.Value;
        List<ProcessIdentity> tree = [];
        for (var i = 0; i < 500 && tree.Count < size; i++)
        {
            await Task.Delay(10);
            tree = ProcessTree.Snapshot(root);
        }
        Assert.Equal(size, tree.Count);
        return tree;
    }

    protected static Task AssertStatus(StatusCode expected, Task call, string? detail = null) => GrpcAssert.StatusAsync(expected, call, detail);
}
