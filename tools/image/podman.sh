#!/usr/bin/env bash
# podman as the tests use it: vfs storage kept in the project's ignored .tools/ folder (so a
# clean clone starts clean and nothing leaks into the machine's default store), and runc as
# the runtime (crun's cgroup handling fails on these machines; runc works).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STORE=${KSTREAM_PODMAN_STORE:-$ROOT/.tools/podman}
mkdir -p "$STORE"
exec podman --storage-driver vfs --root "$STORE/storage" --runroot "$STORE/run" --runtime runc "$@"
