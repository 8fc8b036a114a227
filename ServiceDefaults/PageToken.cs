using System.Text;

namespace Platform.ServiceDefaults;

/// <summary>
/// Opaque page tokens of List RPCs (AIP-158): the last id of the page plus the filters the page was read with, so a
/// token cannot be replayed with other filters.
/// </summary>
public static class PageToken
{
    public static string Write(string lastId, string filters) =>
        Convert.ToBase64String(Encoding.UTF8.GetBytes($"v1\n{lastId}\n{filters}")).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public static bool TryRead(string token, string filters, out string lastId, out string? error)
    {
        lastId = "";
        error = "is not a token from a previous List call";
        try
        {
            var base64 = token.Replace('-', '+').Replace('_', '/');
            base64 = base64.PadRight(base64.Length + (4 - base64.Length % 4) % 4, '=');
            var parts = Encoding.UTF8.GetString(Convert.FromBase64String(base64)).Split('\n', 3);
            if (parts.Length != 3 || parts[0] != "v1" || parts[1].Length == 0) return false;
            if (parts[2] != filters)
            {
                error = "was issued for other filters (the filters must stay the same while paging)";
                return false;
            }
            lastId = parts[1];
            error = null;
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }
}
