namespace Platform.AppHost.Hosting;

/// <summary>
/// The environment a resource is started with, following Aspire's conventions so that moving to Aspire.Hosting
/// changes a package, not the services: Kestrel endpoints, service discovery variables, OpenTelemetry settings.
/// </summary>
public static class ResourceEnvironment
{
    public const string ParentPidVariable = "PLATFORM_PARENT_PID";
    public const string DataDirectoryVariable = "PLATFORM_DATA_DIR";

    /// <summary>The URL of an endpoint on loopback.</summary>
    public static string Url(int port) => $"http://127.0.0.1:{port}";

    public static Dictionary<string, string> Build(
        Resource resource,
        AppModel model,
        IReadOnlyDictionary<(string Resource, string Endpoint), int> ports,
        string stateDirectory,
        string instanceId,
        int parentPid)
    {
        // On top of the AppHost's own environment, which every resource inherits (OTEL_EXPORTER_OTLP_ENDPOINT too).
        var env = new Dictionary<string, string>(StringComparer.Ordinal);

        if (resource is ProjectResource)
        {
            env["DOTNET_ENVIRONMENT"] = "Development";
            env["ASPNETCORE_ENVIRONMENT"] = "Development";
            // Single-line console logs read well behind the AppHost's per-resource prefix.
            env["Logging__Console__FormatterName"] = "simple";
            env["Logging__Console__FormatterOptions__SingleLine"] = "true";
        }

        foreach (var endpoint in resource.Endpoints)
        {
            var port = ports[(resource.Name, endpoint.Name)];
            env[$"Kestrel__Endpoints__{endpoint.Name}__Url"] = Url(port);
            env[$"Kestrel__Endpoints__{endpoint.Name}__Protocols"] = endpoint.Protocol.ToString();
        }

        // Aspire 8-9 service discovery form: services__{resource}__{endpoint}__0=url.
        foreach (var reference in resource.References.Distinct())
        {
            foreach (var endpoint in model[reference].Endpoints)
                env[$"services__{reference}__{endpoint.Name}__0"] = Url(ports[(reference, endpoint.Name)]);
        }

        env["OTEL_SERVICE_NAME"] = resource.Name;
        env["OTEL_RESOURCE_ATTRIBUTES"] = $"service.instance.id={instanceId}";
        env["OTEL_DOTNET_EXPERIMENTAL_ASPNETCORE_ENABLE_GRPC_INSTRUMENTATION"] = "true";
        env["OTEL_BSP_SCHEDULE_DELAY"] = "1000";
        env["OTEL_BLRP_SCHEDULE_DELAY"] = "1000";
        env["OTEL_METRIC_EXPORT_INTERVAL"] = "1000";
        env["OTEL_TRACES_SAMPLER"] = "always_on";

        env[DataDirectoryVariable] = Path.Combine(stateDirectory, resource.Name);
        env[ParentPidVariable] = parentPid.ToString(System.Globalization.CultureInfo.InvariantCulture);

        foreach (var (key, value) in resource.Environment) env[key] = value;
        return env;
    }
}
