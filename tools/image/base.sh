#!/usr/bin/env bash
# Make (once) the base image the tests build docker/Dockerfile on: Debian bookworm minbase with
# python3 and python3-venv, made by debootstrap from the mirror apt already uses (no image
# registry is reachable here) and imported into the project's podman store. The rootfs tarball
# is cached in .tools/image, so a store wiped by hand is refilled in seconds.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TAG=${KSTREAM_BASE_IMAGE:-localhost/kstream-base:bookworm-py}
OUT=$ROOT/.tools/image
TAR=$OUT/bookworm-py.tar
PODMAN="$HERE/podman.sh"

if "$PODMAN" image exists "$TAG"; then
  echo "$TAG"; exit 0
fi
mkdir -p "$OUT"
if [ ! -s "$TAR" ]; then
  # The first plain Debian archive apt uses (not security, not a third-party repository).
  mirror=$(grep -rhoE 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' /etc/apt/sources.list.d/ /etc/apt/sources.list \
             2>/dev/null | head -1 | tr -d '[:space:]' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$OUT/rootfs
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" >"$OUT/debootstrap.log" 2>&1 \
    || { echo "debootstrap failed, see $OUT/debootstrap.log" >&2; tail -5 "$OUT/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$TAR.part" . && mv "$TAR.part" "$TAR"
  rm -rf "$rootfs"
fi
"$PODMAN" import --change 'CMD ["/bin/bash"]' "$TAR" "$TAG" >/dev/null
echo "$TAG"
