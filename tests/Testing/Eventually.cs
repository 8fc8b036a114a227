namespace Platform.Testing;

/// <summary>Polls a condition of a real system until it holds or a deadline passes.</summary>
public static class Eventually
{
    /// <summary>Returns the first value that satisfies <paramref name="until"/>; throws naming the last one seen otherwise.</summary>
    public static async Task<T> ValueAsync<T>(Func<Task<T>> read, Func<T, bool> until, TimeSpan timeout, string waitingFor)
    {
        var deadline = DateTime.UtcNow + timeout;
        T last;
        while (true)
        {
            last = await read();
            if (until(last)) return last;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"waited {timeout.TotalSeconds:0.#}s for {waitingFor}; last seen: {last}");
            await Task.Delay(20);
        }
    }
}
