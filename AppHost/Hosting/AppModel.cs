namespace Platform.AppHost.Hosting;

/// <summary>The validated app model: resources and the order to start them in.</summary>
public sealed class AppModel
{
    private AppModel(IReadOnlyList<Resource> resources, IReadOnlyList<Resource> startOrder)
    {
        Resources = resources;
        StartOrder = startOrder;
    }

    public IReadOnlyList<Resource> Resources { get; }

    /// <summary>Every resource after the ones it waits for (a topological order of WaitFor, stable by declaration).</summary>
    public IReadOnlyList<Resource> StartOrder { get; }

    public Resource this[string name] => Resources.First(r => r.Name == name);

    /// <summary>Checks names, references and waits; throws <see cref="AppModelException"/> with a one-line message.</summary>
    public static AppModel Validate(IReadOnlyList<Resource> resources)
    {
        var byName = new Dictionary<string, Resource>(StringComparer.Ordinal);
        foreach (var resource in resources)
        {
            if (!IsValidName(resource.Name))
                throw new AppModelException($"resource name '{resource.Name}' is invalid: use 1-63 lowercase letters, digits and '-', starting with a letter");
            if (!byName.TryAdd(resource.Name, resource))
                throw new AppModelException($"resource '{resource.Name}' is declared twice");
        }

        foreach (var resource in resources)
        {
            foreach (var reference in resource.References.Where(r => !byName.ContainsKey(r)))
                throw new AppModelException($"resource '{resource.Name}' references '{reference}', which is not in the app model");
            foreach (var wait in resource.WaitFors.Where(w => !byName.ContainsKey(w)))
                throw new AppModelException($"resource '{resource.Name}' waits for '{wait}', which is not in the app model");
            if (resource.WaitFors.Contains(resource.Name))
                throw new AppModelException($"resource '{resource.Name}' waits for itself");
        }

        return new AppModel(resources, TopologicalOrder(resources, byName));
    }

    internal static bool IsValidName(string name) =>
        name.Length is > 0 and <= 63 && char.IsAsciiLetterLower(name[0]) && name[^1] != '-' &&
        name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-');

    private static List<Resource> TopologicalOrder(IReadOnlyList<Resource> resources, Dictionary<string, Resource> byName)
    {
        var order = new List<Resource>(resources.Count);
        var state = new Dictionary<string, bool>(); // false: on the current path, true: done
        var path = new Stack<string>();

        void Visit(Resource resource)
        {
            if (state.TryGetValue(resource.Name, out var done))
            {
                if (done) return;
                var cycle = path.Reverse().SkipWhile(n => n != resource.Name).Append(resource.Name);
                throw new AppModelException($"WaitFor has a cycle: {string.Join(" -> ", cycle)}");
            }

            state[resource.Name] = false;
            path.Push(resource.Name);
            foreach (var dependency in resource.WaitFors) Visit(byName[dependency]);
            path.Pop();
            state[resource.Name] = true;
            order.Add(resource);
        }

        foreach (var resource in resources) Visit(resource);
        return order;
    }
}
