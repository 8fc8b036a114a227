#!/usr/bin/env bash
# Publishes the platform's services as Native AOT builds into artifacts/publish/<service>/ (self-contained where AOT
# cannot build here). The container images are made of these (eng/build-images.sh), and the AppHost runs them with
# `dotnet run --project AppHost -- --native`: each service then serves about 0.1 s after its start instead of about
# 0.4-0.5 s, and in about half the memory. A publish with nothing changed is quick.
#
#   eng/publish-native.sh [service ...]      (registry launcher monitor supervisor by default)
set -euo pipefail
cd "$(dirname "$0")/.."
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(registry launcher monitor supervisor)
declare -A projects=([registry]=SessionRegistry [launcher]=Launcher [monitor]=AgentMonitor [supervisor]=Supervisor)
for service in "${services[@]}"; do
  project=${projects[$service]:?unknown service $service}
  out="artifacts/publish/$service"
  echo "publishing $service (Platform.$project) to $out"
  if ! dotnet publish "services/$project" -c Release -r linux-x64 -p:PublishAot=true -p:CppCompilerAndLinker=gcc \
       -p:StripSymbols=true -o "$out" -nologo -v quiet -clp:ErrorsOnly; then
    echo "  no Native AOT build of $service here: self-contained instead"
    rm -rf "$out"
    dotnet publish "services/$project" -c Release -r linux-x64 --self-contained -o "$out" -nologo -v quiet -clp:ErrorsOnly
  fi
done
