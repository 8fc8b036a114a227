namespace Platform.ProcessControl.Tests;

public sealed class ModifiedDirectoriesTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("modified-").FullName;
    private readonly ModifiedDirectories _watch = new();

    public void Dispose()
    {
        _watch.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private string Dir(string name) => Directory.CreateDirectory(Path.Combine(_root, name)).FullName;

    /// <summary>Appends lines from another process, as a child writing its output does (O_APPEND on its own
    /// descriptor). Spawned through the shared ChildReaper, which reaps every child of this test process: a
    /// System.Diagnostics.Process child would be reaped from under its WaitForExit.</summary>
    private static async Task AppendFromAChild(string file, int lines = 1)
    {
        var sh = ChildReaper.Shared.Spawn(new SpawnRequest("/bin/sh",
            ["-c", $"i=0; while [ $i -lt {lines} ]; do echo line >> '{file}'; i=$((i+1)); done"],
            new Dictionary<string, string> { ["PATH"] = "/usr/bin:/bin" }, null, null, null));
        Assert.Equal(new ExitStatus(0, null), await sh.Exited.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task A_directory_is_due_when_new_and_then_only_after_a_write_in_it_however_many_writes()
    {
        var (quiet, busy) = (Dir("quiet"), Dir("busy"));
        File.WriteAllText(Path.Combine(quiet, "stdout.log"), "");
        File.WriteAllText(Path.Combine(busy, "stdout.log"), "");

        Assert.Equal([quiet, busy], _watch.Due([quiet, busy])); // new: looked at once
        Assert.Equal(2, _watch.Watched);
        Assert.Empty(_watch.Due([quiet, busy])); // nothing written: nothing to look at

        await AppendFromAChild(Path.Combine(busy, "stdout.log"), lines: 50);
        Assert.Equal([busy], _watch.Due([quiet, busy])); // fifty writes, one look
        Assert.Empty(_watch.Due([quiet, busy]));

        // Armed again by the look: the next write is seen too, a truncation (a rotation) counts as a write.
        File.WriteAllText(Path.Combine(busy, "stdout.log"), "");
        Assert.Equal([busy], _watch.Due([quiet, busy]));
        await AppendFromAChild(Path.Combine(quiet, "stderr.log"));
        Assert.Equal([quiet], _watch.Due([quiet, busy]));
    }

    [Fact]
    public async Task A_directory_left_out_is_forgotten_and_one_that_cannot_be_watched_is_due_at_every_look()
    {
        var (kept, dropped) = (Dir("kept"), Dir("dropped"));
        var missing = Path.Combine(_root, "missing");
        Assert.Equal([kept, dropped, missing], _watch.Due([kept, dropped, missing]));
        Assert.Equal(2, _watch.Watched); // the missing one has no watch

        Assert.Equal([missing], _watch.Due([kept, missing]));
        Assert.Equal(1, _watch.Watched); // dropped's watch removed
        await AppendFromAChild(Path.Combine(dropped, "stdout.log"));
        Assert.Equal([missing], _watch.Due([kept, missing]));

        // Back in the list, it is new again.
        Assert.Equal([dropped, missing], _watch.Due([kept, dropped, missing]));
    }
}
