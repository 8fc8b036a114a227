using Platform.AgentMonitor;

// Content root = the build output, so appsettings.json is found wherever the service is started from.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });

builder.AddServiceDefaults();
builder.AddAgentMonitor();

var app = builder.Build();

app.MapDefaultEndpoints();
app.MapAgentMonitor();

app.Run();
