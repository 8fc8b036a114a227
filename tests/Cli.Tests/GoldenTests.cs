using Google.Protobuf.WellKnownTypes;
using Platform.Supervisor.V1;

namespace Platform.Cli.Tests;

/// <summary>The workloads table exactly as a pipe receives it, from fixed workloads at a fixed time.</summary>
public sealed class GoldenTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 3, 12, 0, 0, TimeSpan.Zero);

    private static Workload Workload(string name, WorkloadStatus.Types.Phase phase, long generation, long restarts, long pid, TimeSpan age, string message = "") => new()
    {
        Name = name,
        CreateTime = Timestamp.FromDateTimeOffset(Now - age),
        Status = new WorkloadStatus { Phase = phase, Generation = generation, TotalRestarts = restarts, Pid = pid, Message = message, InstanceId = pid == 0 ? "" : $"01M8YJQBZN1ZCT12P4EXEGAK{generation:00}" },
    };

    private static readonly Workload[] Workloads =
    [
        Workload("api", WorkloadStatus.Types.Phase.Running, 1, 0, 4242, TimeSpan.FromSeconds(42), "running generation 1 (pid 4242)"),
        Workload("flaky-worker", WorkloadStatus.Types.Phase.BackingOff, 12, 11, 0, TimeSpan.FromMinutes(3) + TimeSpan.FromSeconds(7), "exited with code 1; restarting in 8s"),
        Workload("nightly", WorkloadStatus.Types.Phase.Stopped, 3, 2, 0, TimeSpan.FromDays(4)),
    ];

    [Fact]
    public void The_workloads_table_in_a_pipe_is_plain_aligned_text()
    {
        var text = new StringWriter();
        GetCommands.WorkloadTable(new Output(text, colour: false), Workloads, Now, wide: false);
        Assert.Equal("""
            NAME          PHASE        GEN  RESTARTS  PID   AGE
            api           RUNNING      1    0         4242  42s
            flaky-worker  BACKING_OFF  12   11        -     3m7s
            nightly       STOPPED      3    2         -     4d

            """.Replace("\r", ""), text.ToString());
    }

    [Fact]
    public void On_a_terminal_the_same_table_colours_the_phase_and_keeps_the_columns()
    {
        var text = new StringWriter();
        GetCommands.WorkloadTable(new Output(text, colour: true), Workloads, Now, wide: false);
        var lines = text.ToString().Split('\n');
        Assert.Equal("api           \u001b[32mRUNNING    \u001b[0m  1    0         4242  42s", lines[1]);
        Assert.Equal("flaky-worker  \u001b[33mBACKING_OFF\u001b[0m  12   11        -     3m7s", lines[2]);
    }
}
