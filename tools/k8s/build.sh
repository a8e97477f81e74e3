#!/usr/bin/env bash
# Build the Kubernetes tools the deploy tests use, from source through the Go module proxy, into
# the ignored .tools/k8s/ folder. Versions are pinned by the go.mod/go.sum next to this script
# (one wrapper module per tool, so their dependency versions never mix). A binary is rebuilt only
# when its module files, flags or the Go version change: a warm run takes about a second.
#
#   helm v3.22.0, kubeconform v0.8.0, controller-gen v0.20.0, kwok v0.8.0, etcd v3.6.16,
#   kube-apiserver / kube-controller-manager / kube-scheduler / kubectl v1.34.4,
#   and the KEDA (v2.20.2) and prometheus-operator (v0.95.2) CRDs made by controller-gen.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${KSTREAM_K8S_TOOLS:-$ROOT/.tools/k8s}
BIN=$OUT/bin
mkdir -p "$BIN" "$OUT/stamps"
[ -x /usr/local/go/bin/go ] && PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "go is missing: install Go 1.26+ (the tools are built from source)" >&2; exit 1; }
GOVERSION=$(go env GOVERSION)
export GOFLAGS="-mod=readonly ${GOFLAGS:-}"

stamp_of() {  # module dir, then anything else the result depends on
  local mod=$1; shift
  { cat "$HERE/$mod/go.mod" "$HERE/$mod/go.sum"; echo "$GOVERSION $*"; } | sha256sum | cut -c1-32
}

build() {  # module dir, binary name, package, extra -ldflags
  local mod=$1 name=$2 pkg=$3 ldflags=${4:-} key
  key=$(stamp_of "$mod" "$pkg" "$ldflags")
  if [ -x "$BIN/$name" ] && [ "$(cat "$OUT/stamps/$name" 2>/dev/null)" = "$key" ]; then
    return 0
  fi
  echo "building $name ($pkg)" >&2
  local t0=$SECONDS
  (cd "$HERE/$mod" && go build -trimpath -ldflags "-s -w $ldflags" -o "$BIN/$name.part" "$pkg")
  mv "$BIN/$name.part" "$BIN/$name"
  echo "$key" > "$OUT/stamps/$name"
  echo "built $name in $((SECONDS - t0)) s" >&2
}

# Without these flags helm reports "v3.22" and assumes Kubernetes 1.20 (for lint and template).
HELM_X=helm.sh/helm/v3
HELM_LDFLAGS="-X $HELM_X/internal/version.version=v3.22.0 \
 -X $HELM_X/pkg/chartutil.k8sVersionMajor=1 -X $HELM_X/pkg/chartutil.k8sVersionMinor=34 \
 -X $HELM_X/pkg/lint/rules.k8sVersionMajor=1 -X $HELM_X/pkg/lint/rules.k8sVersionMinor=34"
K8S_LDFLAGS="-X k8s.io/component-base/version.gitVersion=v1.34.4 \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"

# Cheapest first: the offline chart tests need only helm and kubeconform.
build helm helm helm.sh/helm/v3/cmd/helm "$HELM_LDFLAGS"
build kubeconform kubeconform github.com/yannh/kubeconform/cmd/kubeconform
build controller-gen controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
build etcd etcd go.etcd.io/etcd/server/v3
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build kubernetes "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$K8S_LDFLAGS"
done

# CRDs of the optional objects the chart renders, generated from the projects' Go API types.
key=$(stamp_of crds "$(cat "$OUT/stamps/controller-gen")")
if [ "$(cat "$OUT/stamps/crds" 2>/dev/null)" != "$key" ]; then
  echo "generating KEDA and prometheus-operator CRDs" >&2
  rm -rf "$OUT/crds.part" && mkdir -p "$OUT/crds.part"
  (cd "$HERE/crds" \
    && "$BIN/controller-gen" crd:crdVersions=v1 paths=github.com/kedacore/keda/v2/apis/keda/v1alpha1 \
         output:crd:dir="$OUT/crds.part" \
    && "$BIN/controller-gen" crd:crdVersions=v1,maxDescLen=0 \
         paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 \
         output:crd:dir="$OUT/crds.part")
  rm -rf "$OUT/crds" && mv "$OUT/crds.part" "$OUT/crds"
  echo "$key" > "$OUT/stamps/crds"
fi
echo "k8s tools ready in $BIN" >&2
