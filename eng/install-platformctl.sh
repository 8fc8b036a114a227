#!/usr/bin/env bash
# Installs platformctl as one native binary (Native AOT): eng/install-platformctl.sh [DIR]
# DIR defaults to /usr/local/bin for root, else ~/.local/bin. Native AOT links with the system's C toolchain: gcc and
# zlib are installed with apt-get when missing. Where that is not possible, platformctl is installed as a .NET tool
# instead (dotnet tool install --global from the repository's packed output; it then runs on the .NET runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

if [ "$(id -u)" -eq 0 ]; then dir="${1:-/usr/local/bin}"; else dir="${1:-$HOME/.local/bin}"; fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

missing=()
command -v gcc >/dev/null || missing+=(gcc)
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} (apt-get) for Native AOT"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 || true
fi

if command -v gcc >/dev/null && [ -e /usr/include/zlib.h ] &&
   dotnet publish cli -c Release -r linux-x64 -p:PublishAot=true -p:CppCompilerAndLinker=gcc -o "$out" -nologo -v quiet -clp:ErrorsOnly; then
  mkdir -p "$dir"
  install -m 0755 "$out/platformctl" "$dir/platformctl"
  echo "installed $dir/platformctl (native)"
  case ":$PATH:" in *":$dir:"*) ;; *) echo "note: $dir is not on PATH";; esac
else
  echo "Native AOT is not available here; installing platformctl as a .NET tool"
  dotnet pack cli -c Release -o "$out" -nologo -v quiet -clp:ErrorsOnly
  dotnet tool uninstall --global Platform.Cli >/dev/null 2>&1 || true
  dotnet tool install --global --add-source "$out" Platform.Cli
  echo "installed platformctl (a .NET tool in ~/.dotnet/tools)"
fi
