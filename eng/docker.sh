#!/usr/bin/env bash
# Makes a Docker engine available: nothing to do when one answers; else Debian's docker.io is installed (when missing)
# and dockerd started in the background, logging to /tmp/dockerd.log.
set -euo pipefail
docker info >/dev/null 2>&1 && exit 0
if ! command -v dockerd >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null)
fi
nohup dockerd >/tmp/dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "dockerd did not start: see /tmp/dockerd.log" >&2
exit 1
