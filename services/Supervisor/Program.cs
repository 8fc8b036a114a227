using Platform.Supervisor;

// Content root = the build output, so appsettings.json is found wherever the service is started from.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });

builder.AddServiceDefaults();
builder.AddSupervisor();

var app = builder.Build();

app.MapDefaultEndpoints();
app.MapSupervisor();

app.Run();
