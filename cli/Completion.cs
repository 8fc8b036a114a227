namespace Platform.Cli;

/// <summary>
/// Shell completion through System.CommandLine's suggest directive: the script hands the line typed so far to
/// <c>platformctl [suggest:POSITION] "LINE"</c>, which answers one candidate per line (commands, options, kinds).
/// </summary>
public static class Completion
{
    public static int Print(string shell)
    {
        switch (shell)
        {
            case "bash":
                Console.Write("""
                    # platformctl completion for bash: source <(platformctl completion bash)
                    _platformctl_complete() {
                      local line="${COMP_LINE#* }"
                      local point=$((COMP_POINT - ${#COMP_LINE} + ${#line}))
                      local IFS=$'\n'
                      COMPREPLY=($(compgen -W "$(platformctl "[suggest:${point}]" "${line}" 2>/dev/null)" -- "${COMP_WORDS[COMP_CWORD]}"))
                    }
                    complete -o default -F _platformctl_complete platformctl

                    """);
                return ExitCode.Ok;
            case "zsh":
                Console.Write("""
                    # platformctl completion for zsh: source <(platformctl completion zsh)
                    _platformctl() {
                      local line="${BUFFER#* }"
                      local point=$((CURSOR - ${#BUFFER} + ${#line}))
                      local -a candidates
                      candidates=("${(@f)$(platformctl "[suggest:${point}]" "${line}" 2>/dev/null)}")
                      compadd -- $candidates
                    }
                    compdef _platformctl platformctl

                    """);
                return ExitCode.Ok;
            default:
                Console.Error.WriteLine($"platformctl: no completion for '{shell}': bash or zsh");
                return ExitCode.Usage;
        }
    }
}
