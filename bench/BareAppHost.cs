using System.Globalization;
using Platform.ProcessControl;

namespace Platform.Bench;

/// <summary>
/// The baseline of <c>bench apphost-startup</c>: a bare Aspire AppHost (13.6.5) over four empty ASP.NET Core services
/// with our endpoints (gRPC HTTP/2 + HTTP/1.1), references, waits and launch mode, written to a temporary directory
/// and built there once per run of the benchmark (about a minute).
/// </summary>
internal static class BareAppHost
{
    public static readonly string[] Names = ["registry", "launcher", "monitor", "supervisor"];

    private static readonly string Root = Path.Combine(Path.GetTempPath(), "platform-bench-bare-apphost");

    public static int HttpPort(int service) => 5292 + service * 10;

    private static int GrpcPort(int service) => 5291 + service * 10;

    public static async Task<string> BuildAsync(string configuration)
    {
        Directory.CreateDirectory(Root);
        // Outside the repository: no Directory.Build.props or central package versions of ours apply.
        File.WriteAllText(Path.Combine(Root, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(Root, "Directory.Packages.props"), "<Project />");
        for (var i = 0; i < Names.Length; i++)
        {
            var dir = Path.Combine(Root, "Svc" + i);
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, $"Svc{i}.csproj"), """
                <Project Sdk="Microsoft.NET.Sdk.Web">
                  <PropertyGroup><TargetFramework>net10.0</TargetFramework><ImplicitUsings>enable</ImplicitUsings><ServerGarbageCollection>false</ServerGarbageCollection></PropertyGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(dir, "Program.cs"), """
                var app = WebApplication.CreateBuilder(args).Build();
                app.MapGet("/health", () => "Healthy");
                app.Run();
                """);
            File.WriteAllText(Path.Combine(dir, "appsettings.json"), $$"""
                { "Kestrel": { "Endpoints": {
                    "grpc": { "Url": "http://127.0.0.1:{{GrpcPort(i)}}", "Protocols": "Http2" },
                    "http": { "Url": "http://127.0.0.1:{{HttpPort(i)}}", "Protocols": "Http1" } } } }
                """);
        }
        var host = Path.Combine(Root, "BareAppHost");
        Directory.CreateDirectory(Path.Combine(host, "Properties"));
        File.WriteAllText(Path.Combine(host, "BareAppHost.csproj"), $$"""
            <Project Sdk="Aspire.AppHost.Sdk/13.6.4">
              <PropertyGroup><OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework><ImplicitUsings>enable</ImplicitUsings><NoWarn>ASPIRE010;NU1603</NoWarn></PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Aspire.Hosting.AppHost" Version="13.6.5" />
                <PackageReference Include="Polly.Core" Version="8.9.1" />
                <PackageReference Include="Nerdbank.MessagePack" Version="1.3.88" />
              </ItemGroup>
              <ItemGroup>
            {{string.Join("\n", Enumerable.Range(0, 4).Select(i => $"    <ProjectReference Include=\"../Svc{i}/Svc{i}.csproj\" />"))}}
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(host, "Program.cs"), $$"""
            using Aspire.Hosting.ApplicationModel;
            var builder = DistributedApplication.CreateBuilder(args);
            IResourceBuilder<ProjectResource> Svc<T>(string name) where T : IProjectMetadata, new()
            {
                var project = builder.AddProject<T>(name).WithHttpHealthCheck("/health", endpointName: "http");
                var dir = Path.GetDirectoryName(new T().ProjectPath)!;
                var output = Environment.GetEnvironmentVariable("BARE_NATIVE") == "true" ? Path.Combine(dir, "bin", "native") : Path.Combine(dir, "bin", "{{configuration}}", "net10.0");
                return project.WithAnnotation(new ExecutableAnnotation { Command = Path.Combine(output, typeof(T).Name), WorkingDirectory = output }, ResourceAnnotationMutationBehavior.Replace);
            }
            var registry = Svc<Projects.Svc0>("registry");
            var launcher = Svc<Projects.Svc1>("launcher").WithReference(registry).WaitFor(registry);
            var monitor = Svc<Projects.Svc2>("monitor").WithReference(registry).WaitFor(registry);
            Svc<Projects.Svc3>("supervisor").WithReference(registry).WaitFor(registry).WithReference(launcher).WaitFor(launcher).WithReference(monitor).WaitFor(monitor);
            builder.Build().Run();
            """);

        Console.WriteLine($"building the bare AppHost in {Root} ...");
        await DotnetAsync("building the bare AppHost", "build", host, "-c", configuration);
        return Path.Combine(host, "bin", configuration, "net10.0", "BareAppHost.dll");
    }

    /// <summary>
    /// Publishes the four empty services as Native AOT builds (SvcN/bin/native), which the bare AppHost runs with
    /// BARE_NATIVE=true: the baseline of our <c>--native</c> mode. Call after <see cref="BuildAsync"/>.
    /// </summary>
    public static async Task PublishNativeAsync()
    {
        Console.WriteLine("publishing the four empty services as Native AOT builds ...");
        for (var i = 0; i < Names.Length; i++)
        {
            var dir = Path.Combine(Root, "Svc" + i);
            await DotnetAsync($"publishing Svc{i}", "publish", dir, "-c", "Release", "-r", "linux-x64", "-p:PublishAot=true",
                "-p:CppCompilerAndLinker=gcc", "-o", Path.Combine(dir, "bin", "native"));
        }
    }

    private static async Task DotnetAsync(string what, params string[] args)
    {
        var log = Path.Combine(Root, "build.log");
        var build = ChildReaper.Shared.Spawn(new SpawnRequest("dotnet", [.. args, "-nologo", "-v", "q", "-clp:ErrorsOnly"],
            Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>().ToDictionary(e => (string)e.Key, e => (string?)e.Value ?? ""),
            Root, StdioTarget.File(log), StdioTarget.File(log)));
        var exit = await build.Exited;
        if (exit.Code != 0) throw new InvalidOperationException($"{what} failed ({exit}):\n" + File.ReadAllText(log));
    }
}
