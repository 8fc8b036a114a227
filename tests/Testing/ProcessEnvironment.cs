namespace Platform.Testing;

public static class ProcessEnvironment
{
    /// <summary>
    /// A process's environment. Right after a spawn it can read empty for a moment: posix_spawn returns when the
    /// child has left the parent's memory, a little before the kernel has set up the new program's environment.
    /// </summary>
    public static async Task<string[]> ReadAsync(long pid)
    {
        for (var i = 0; ; i++)
        {
            var text = await File.ReadAllTextAsync($"/proc/{pid}/environ");
            if (text.Length > 0 || i == 200) return text.Split('\0');
            await Task.Delay(10);
        }
    }
}
