using Microsoft.Data.Sqlite;

namespace Platform.ServiceDefaults;

/// <summary>
/// Statements a store runs at every write, prepared once: SQLite parses, resolves and plans a statement when it is
/// prepared, and a command created per write (as <c>CreateCommand</c> at each call does) pays that each time. In a
/// start of 300 parsing and planning were about 5 % of the Launcher's own CPU (perf). Microsoft.Data.Sqlite keeps a
/// command's prepared statements until the command is disposed; it has no cache across commands, so the store keeps
/// the command. A prepared command runs under the store's lock and is given the transaction of each commit.
/// </summary>
public static class SqliteStatements
{
    /// <summary>A command for <paramref name="sql"/> with its parameters (in this order), prepared.</summary>
    public static SqliteCommand Prepare(this SqliteConnection connection, string sql, params string[] parameters)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var name in parameters) command.Parameters.Add(new SqliteParameter { ParameterName = name, Value = DBNull.Value });
        command.Prepare();
        return command;
    }

    /// <summary>Runs <paramref name="body"/> in one transaction with <paramref name="prepared"/> enlisted in it (a
    /// command whose Transaction is not the connection's current one is refused), and commits.</summary>
    public static void InTransaction(this SqliteConnection connection, SqliteCommand[] prepared, Action body)
    {
        using var transaction = connection.BeginTransaction();
        foreach (var command in prepared) command.Transaction = transaction;
        body();
        transaction.Commit();
    }

    /// <summary>Runs a prepared command with its parameters' values, in the order they were named.</summary>
    public static void Run(this SqliteCommand command, params object[] values)
    {
        for (var i = 0; i < values.Length; i++) command.Parameters[i].Value = values[i];
        command.ExecuteNonQuery();
    }
}
