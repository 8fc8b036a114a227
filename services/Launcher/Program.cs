using Platform.Launcher;

// Content root = the build output, so appsettings.json is found wherever the service is started from.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });

builder.AddServiceDefaults();
builder.AddLauncher();

var app = builder.Build();

app.MapDefaultEndpoints();
app.MapLauncher();

app.Run();
