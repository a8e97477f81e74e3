#!/usr/bin/env bash
# Debian packages the deploy tier needs: podman (vfs storage, chroot builds, runc), debootstrap
# for the base image. Installed only when missing (needs root, as on the project's machines).
set -euo pipefail
need=()
for cmd in podman buildah debootstrap runc newuidmap openssl; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing deploy packages (missing: ${need[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends podman buildah debootstrap runc uidmap \
  fuse-overlayfs slirp4netns containernetworking-plugins openssl >/dev/null
