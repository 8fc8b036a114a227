namespace Platform.SessionRegistry.Tests;

// The registry's behaviour tests again, on PostgreSQL instead of SQLite (ConnectionStrings:registry-store): one store
// suite for both. Each test has a database of its own on the tests' private PostgreSQL server (Testing.PostgresServer).

public sealed class RegisterTestsOnPostgres : RegisterTests
{
    protected override bool OnPostgres => true;
}

public sealed class ListTestsOnPostgres : ListTests
{
    protected override bool OnPostgres => true;
}

public sealed class LeaseTestsOnPostgres : LeaseTests
{
    protected override bool OnPostgres => true;
}

public sealed class WatchTestsOnPostgres : WatchTests
{
    protected override bool OnPostgres => true;
}

public sealed class BadInputTestsOnPostgres : BadInputTests
{
    protected override bool OnPostgres => true;
}
