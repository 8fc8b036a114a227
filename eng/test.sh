#!/usr/bin/env bash
# The README's test command: builds the solution, runs every test project, and ends with one line
# "N passed, N failed, N skipped" summed over all of them. Exit code: non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# Debian packages the tests drive for real: tmux (the AgentMonitor's tmux probes), chromium (the Aspire dashboard in
# a browser, driven by Playwright, which downloads no browser of its own here) and postgresql (the registry's second
# store: the tests start a private server of their own on a loopback port, tests/Testing/PostgresServer.cs).
missing=()
command -v tmux >/dev/null || missing+=(tmux)
[ -x /usr/bin/chromium ] || missing+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
command -v kubectl >/dev/null || missing+=(kubernetes-client) # kubectl kustomize renders deploy/kubernetes (Deploy.Tests)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 || echo "could not install ${missing[*]}"
fi

# The container tests (tests/Containers.Tests) need a Docker engine and the platform's images: Debian's docker.io,
# dockerd started when none runs, a local Debian base image (no image registry is reachable) and the four images.
# The images are made of the services' Native AOT builds (artifacts/publish, eng/publish-native.sh), which the
# AppHost's --native mode runs too (EndToEnd.Tests): published by build-images.sh, or here when there is no engine.
if eng/docker.sh; then
  eng/build-images.sh --local-base || echo "could not build the images: the container tests will fail"
  # PostgreSQL in a container for the store suite (tests/Testing/PostgresServer.cs) and the container tests.
  if docker build -q -t platform/postgres-test:15 tests/Containers.Tests/postgres >/dev/null; then
    export PLATFORM_TEST_POSTGRES=container
  else
    echo "could not build the PostgreSQL image: the store suite runs on a private cluster instead"
  fi
else
  echo "no Docker engine: the container tests will fail"
  eng/publish-native.sh >/dev/null || echo "could not publish the Native AOT builds: the --native test will fail"
fi

if ! dotnet build Platform.sln -nologo -v quiet -clp:ErrorsOnly; then
  echo "build failed"
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A test that runs 10 minutes is hung (the longest, the chaos test, takes about 4): its host is killed and the test
# named, so a hang costs 10 minutes and says where, instead of running out CI's clock.
dotnet test Platform.sln --no-build -nologo --blame-hang-timeout 10m --blame-hang-dump-type none 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# The tests' launchers (SIGKILLed on purpose, with data directories that are gone) leave empty cgroup subtrees:
# removed here, deepest first (rmdir refuses a cgroup that still has processes).
for mount in $(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") print $5; break } }' /proc/self/mountinfo); do
  find "$mount" -mindepth 1 -depth -type d -path '*platform-launcher-*' -exec rmdir {} + 2>/dev/null || true
done

# Each test project prints: "Passed!  - Failed:     0, Passed:    26, Skipped:     0, Total:    26, ..."
read -r passed failed skipped < <(grep -E '^(Passed|Failed)!' "$log" | awk -F'[:,]' '
  { f += $2; p += $4; s += $6 } END { printf "%d %d %d\n", p, f, s }')
projects=$(find tests -name '*.Tests.csproj' | wc -l)
reported=$(grep -cE '^(Passed|Failed)!' "$log")
if [ "$reported" -lt "$projects" ]; then
  echo "only $reported of $projects test projects reported results (a test host crashed or hung)"
  failed=$((failed + projects - reported))
  status=1
fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi

echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
