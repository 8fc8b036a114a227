#!/usr/bin/env bash
# A local Debian bookworm base image, platform/base:bookworm, for machines that reach no image registry: debootstrap
# --variant=minbase into a directory (Debian's packages, about 30 s), then docker import. Root, debootstrap and a
# running Docker engine are needed (eng/docker.sh starts one).
set -euo pipefail
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
command -v debootstrap >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null)
# libssl3 and ca-certificates: what Microsoft's runtime-deps image has beside glibc (a .NET gRPC client loads OpenSSL).
debootstrap --variant=minbase --include=libssl3,ca-certificates bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import - platform/base:bookworm >/dev/null
echo "platform/base:bookworm ($(docker image inspect -f '{{.Size}}' platform/base:bookworm | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
