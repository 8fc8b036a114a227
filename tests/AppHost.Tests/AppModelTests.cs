using Platform.AppHost.Hosting;

namespace Platform.AppHost.Tests;

public class AppModelTests
{
    private static DistributedApplicationBuilder NewBuilder() => DistributedApplication.CreateBuilder([]);

    [Fact]
    public void Start_order_puts_every_resource_after_what_it_waits_for()
    {
        var builder = NewBuilder();
        var supervisor = builder.AddExecutable("supervisor", "sleep", "/", "1");
        var registry = builder.AddExecutable("registry", "sleep", "/", "1");
        var launcher = builder.AddExecutable("launcher", "sleep", "/", "1").WaitFor(registry);
        supervisor.WaitFor(launcher).WaitFor(registry);

        var order = builder.Build().Model.StartOrder.Select(r => r.Name).ToList();

        Assert.Equal(["registry", "launcher", "supervisor"], order);
    }

    [Fact]
    public void A_reference_to_a_resource_of_another_model_is_rejected_with_its_names()
    {
        var other = NewBuilder().AddExecutable("ghost", "sleep", "/", "1");
        var builder = NewBuilder();
        builder.AddExecutable("launcher", "sleep", "/", "1").WithReference(other);

        var error = Assert.Throws<AppModelException>(() => builder.Build());

        Assert.Equal("resource 'launcher' references 'ghost', which is not in the app model", error.Message);
    }

    [Fact]
    public void Waiting_for_an_unknown_resource_is_rejected()
    {
        var other = NewBuilder().AddExecutable("ghost", "sleep", "/", "1");
        var builder = NewBuilder();
        builder.AddExecutable("launcher", "sleep", "/", "1").WaitFor(other);

        var error = Assert.Throws<AppModelException>(() => builder.Build());

        Assert.Contains("waits for 'ghost'", error.Message);
    }

    [Fact]
    public void A_cycle_in_WaitFor_is_rejected_and_named()
    {
        var builder = NewBuilder();
        var a = builder.AddExecutable("a", "sleep", "/", "1");
        var b = builder.AddExecutable("b", "sleep", "/", "1").WaitFor(a);
        var c = builder.AddExecutable("c", "sleep", "/", "1").WaitFor(b);
        a.WaitFor(c);

        var error = Assert.Throws<AppModelException>(() => builder.Build());

        Assert.Equal("WaitFor has a cycle: a -> c -> b -> a", error.Message);
    }

    [Fact]
    public void A_resource_waiting_for_itself_is_rejected()
    {
        var builder = NewBuilder();
        var a = builder.AddExecutable("a", "sleep", "/", "1");
        a.WaitFor(a);

        Assert.Equal("resource 'a' waits for itself", Assert.Throws<AppModelException>(() => builder.Build()).Message);
    }

    [Theory]
    [InlineData("Registry")]
    [InlineData("my_service")]
    [InlineData("")]
    [InlineData("-x")]
    [InlineData("x-")]
    public void Invalid_names_are_rejected(string name)
    {
        var builder = NewBuilder();
        builder.AddExecutable(name, "sleep", "/", "1");

        Assert.Contains("is invalid", Assert.Throws<AppModelException>(() => builder.Build()).Message);
    }

    [Fact]
    public void Duplicate_names_are_rejected()
    {
        var builder = NewBuilder();
        builder.AddExecutable("a", "sleep", "/", "1");
        builder.AddExecutable("a", "sleep", "/", "2");

        Assert.Equal("resource 'a' is declared twice", Assert.Throws<AppModelException>(() => builder.Build()).Message);
    }

    [Fact]
    public void A_project_the_AppHost_does_not_reference_cannot_be_launched()
    {
        var builder = NewBuilder();
        var project = builder.AddProject("x", "Platform.DoesNotExist").Resource;

        var error = Assert.Throws<ResourceLaunchException>(project.ResolveLaunch);

        Assert.Contains("'Platform.DoesNotExist' is not referenced by the AppHost", error.Message);
    }

    [Fact]
    public void The_platform_projects_resolve_to_their_build_output()
    {
        var assembly = typeof(DistributedApplication).Assembly;
        foreach (var project in new[] { "Platform.SessionRegistry", "Platform.Launcher", "Platform.AgentMonitor", "Platform.Supervisor" })
        {
            var path = ProjectResource.FindAssembly(assembly, project);
            Assert.NotNull(path);
            Assert.True(File.Exists(path), $"{project}: {path} does not exist");
        }
    }
}
