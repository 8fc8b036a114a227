using Platform.Manifests;

namespace Platform.Cli.Tests;

/// <summary>Workload files: interpolation and the shapes a file may take, in process.</summary>
public sealed class ManifestTests
{
    private static string? Env(string name) => name switch { "HOME_DIR" => "/home/ada", "EMPTY" => "", _ => null };

    [Fact]
    public void Variables_are_taken_from_the_environment_with_defaults_and_escapes_and_a_missing_one_is_an_error()
    {
        Assert.Equal("/home/ada/x", Manifest.Interpolate("${HOME_DIR}/x", "f", Env));
        Assert.Equal("/tmp/y", Manifest.Interpolate("${NOPE:-/tmp}/y", "f", Env));
        Assert.Equal("d", Manifest.Interpolate("${EMPTY:-d}", "f", Env));
        Assert.Equal("echo ${HOME_DIR} $i $$", Manifest.Interpolate("echo $${HOME_DIR} $i $$", "f", Env));
        Assert.Equal("f:2: ${NOPE} is not set (set it, or write ${NOPE:-default})",
            Assert.Throws<ManifestException>(() => Manifest.Interpolate("a\n${NOPE}", "f", Env)).Message);
        // In values only: a comment may say ${ANYTHING}; a value's line is where it stands in the file.
        Assert.Equal("/home/ada/bin/a", Assert.Single(Manifest.Read("# uses ${UNSET}\nname: a\nlaunch: {process: {executable: \"${HOME_DIR}/bin/a\"}}\n", "f", Env)).Launch.Process.Executable);
        Assert.Equal("f:3: ${NOPE} is not set (set it, or write ${NOPE:-default})",
            Assert.Throws<ManifestException>(() => Manifest.Read("# x\nname: a\nlabels: {a: \"${NOPE}\"}\n", "f", Env)).Message);
        Assert.Contains("not ${NAME}", Assert.Throws<ManifestException>(() => Manifest.Interpolate("${1X}", "f", Env)).Message);
        Assert.Contains("without its '}'", Assert.Throws<ManifestException>(() => Manifest.Interpolate("${HOME_DIR", "f", Env)).Message);
    }

    [Fact]
    public void A_file_is_one_workload_a_list_a_workloads_key_or_documents_and_durations_read_as_people_write_them()
    {
        const string one = "name: a\nlaunch: {process: {executable: /bin/true}}\nrestartPolicy: {initialBackoff: 1m30s, maxBackoff: 2h, mode: On-Failure}\nstopGrace: 250ms\n";
        var a = Assert.Single(Manifest.Read(one, "f", Env));
        Assert.Equal(TimeSpan.FromSeconds(90), a.RestartPolicy.InitialBackoff.ToTimeSpan());
        Assert.Equal(TimeSpan.FromHours(2), a.RestartPolicy.MaxBackoff.ToTimeSpan());
        Assert.Equal(Supervisor.V1.RestartPolicy.Types.Mode.OnFailure, a.RestartPolicy.Mode);
        Assert.Equal(TimeSpan.FromMilliseconds(250), a.StopGrace.ToTimeSpan());
        Assert.Equal(["a", "b"], Manifest.Read("- {name: a}\n- {name: b}\n", "f", Env).Select(w => w.Name));
        Assert.Equal(["a", "b"], Manifest.Read("workloads:\n- {name: a}\n- {name: b}\n", "f", Env).Select(w => w.Name));
        Assert.Equal(["a", "b"], Manifest.Read("name: a\n---\nname: b\n---\n", "f", Env).Select(w => w.Name));
        Assert.Equal(["a"], Manifest.Read("""{"name": "a", "stop_grace": "3s"}""", "f", Env).Select(w => w.Name));
        Assert.Contains("declared twice", Assert.Throws<ManifestException>(() => Manifest.Read("- {name: a}\n- {name: a}\n", "f", Env)).Message);
        Assert.Contains("needs a name", Assert.Throws<ManifestException>(() => Manifest.Read("labels: {a: b}\n", "f", Env)).Message);
        Assert.Contains("no workloads", Assert.Throws<ManifestException>(() => Manifest.Read("", "f", Env)).Message);
        Assert.Equal("f:1: workload.stopGrace must be a single value, not a list",
            Assert.Throws<ManifestException>(() => Manifest.Read("{name: a, stopGrace: [1]}", "f", Env)).Message);
    }
}
