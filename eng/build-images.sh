#!/usr/bin/env bash
# Builds the platform's images: platform/registry, platform/launcher, platform/monitor, platform/supervisor (tag
# latest, or $TAG). Each service is published first (Native AOT where it builds so, with gcc; else self-contained),
# then put on BASE (default Microsoft's runtime-deps image; `eng/build-images.sh --local-base` builds a Debian
# bookworm minbase with debootstrap and uses it, for machines that reach no image registry).
#
#   eng/build-images.sh [--local-base] [service ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${TAG:-latest}
base=${BASE:-mcr.microsoft.com/dotnet/runtime-deps:10.0}
services=()
for arg in "$@"; do
  case "$arg" in
    --local-base) base=platform/base:bookworm ;;
    *) services+=("$arg") ;;
  esac
done
[ ${#services[@]} -gt 0 ] || services=(registry launcher monitor supervisor)

# Published into artifacts/publish/ first (kept: a publish with nothing changed is quick; the AppHost's --native runs
# the same builds), then copied into the build context.
eng/publish-native.sh "${services[@]}"

if [ "$base" = platform/base:bookworm ] && ! docker image inspect "$base" >/dev/null 2>&1; then
  eng/base-image.sh
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp deploy/images/Dockerfile "$stage/Dockerfile"
for service in "${services[@]}"; do
  out="artifacts/publish/$service"
  mkdir -p "$stage/publish/$service"
  cp -r "$out"/. "$stage/publish/$service/"
  executable=$(ls "$out" | grep -E '^Platform\.[A-Za-z]+$') # Platform.X, not Platform.X.dll, .pdb or .dbg
  mv "$stage/publish/$service/$executable" "$stage/publish/$service/service"
  rm -f "$stage/publish/$service"/*.dbg "$stage/publish/$service"/*.pdb
  docker build -q --build-arg BASE="$base" --build-arg SERVICE="$service" -t "platform/$service:$tag" "$stage" >/dev/null
  rm -rf "$stage/publish/$service"
  echo "  platform/$service:$tag ($(docker image inspect -f '{{.Size}}' "platform/$service:$tag" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
done
