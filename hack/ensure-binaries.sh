#!/usr/bin/env bash
# Builds the local control plane from Go modules and caches the binaries outside the clone:
#   $NIMIFY_CACHE_DIR/bin/kubernetes-<v>/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   $NIMIFY_CACHE_DIR/bin/etcd-<v>/etcd
#   $NIMIFY_CACHE_DIR/bin/kwok-<v>/kwok
#   $NIMIFY_CACHE_DIR/bin/helm-<v>/helm
#   $NIMIFY_CACHE_DIR/bin/kubernetes-node-<v>/{kubelet,kube-proxy}   (the real node of the dev cluster)
# A component is built only when its directory is missing; a flock per component makes two
# concurrent runs wait for each other, and a build lands with an atomic rename so nobody sees half of it.
# Progress goes to stderr; the last line on stdout is the search path of the directories.
# NIMIFY_REAL_NODE=off skips the node binaries (nobody on this machine will start a real node).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

tag=ensure-binaries
# shellcheck source=build-cache.sh
source "$here/build-cache.sh"
command -v go >/dev/null || { echo "ensure-binaries: 'go' is not on PATH; install Go >= 1.24" >&2; exit 1; }

version_ldflags() {  # $1 = vMAJOR.MINOR.PATCH
  local v="$1" major minor
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$major \
-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
}

# The build module of one set of k8s.io/kubernetes commands. k8s.io/kubernetes replaces its staging modules
# with ./staging paths, which Go ignores in a dependency; a small module of our own pins each staging module
# to the matching published v0.X.Y instead.
write_kubernetes_module() {  # SRC NAME VERSION COMMAND...
  local src="$1" name="$2" version="$3"; shift 3
  local staging_version="v0.${version#v1.}"
  rm -rf "$src"; mkdir -p "$src"
  log "downloading k8s.io/kubernetes@$version"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module nimify.local/$name-build"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging_version" '{ print "replace " $1 " => " $1 " " v }'
    echo
    echo "tool ("
    for cmd in "$@"; do echo "	k8s.io/kubernetes/cmd/$cmd"; done
    echo ")"
  } >"$src/go.mod"
  log "resolving modules for $name $version ($(grep -c '^replace' "$src/go.mod") staging modules pinned to $staging_version)"
  (cd "$src" && go mod tidy 2>&1 | sed 's/^/[go mod tidy] /' >&2)
}

# build_kubernetes_commands OUT VERSION NAME COMMAND...: builds the commands into OUT.
build_kubernetes_commands() {
  local out="$1" version="$2" name="$3"; shift 3
  local src="$cache/src/$name-$version" packages=()
  write_kubernetes_module "$src" "$name" "$version" "$@"
  for cmd in "$@"; do packages+=("k8s.io/kubernetes/cmd/$cmd"); done
  (cd "$src" && go build -v -trimpath -ldflags "$(version_ldflags "$version")" -o "$out/" "${packages[@]}" 2>&1 \
      | progress "$name $version")
  for cmd in "$@"; do
    [[ -x "$out/$cmd" ]] || { echo "ensure-binaries: $cmd was not built" >&2; exit 1; }
  done
}

build_kubernetes() {
  build_kubernetes_commands "$1" "$2" kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl
}

# kubelet and kube-proxy in a component of their own: adding them never rebuilds the control plane, and a
# machine that never starts a real node never builds them. With the Go build cache warm from the control
# plane this takes about a minute.
build_kubernetes_node() {
  build_kubernetes_commands "$1" "$2" kubernetes-node kubelet kube-proxy
}

# etcd's server module also replaces its siblings with local paths; same trick, separate module so that
# version selection never mixes etcd's and Kubernetes' dependencies.
build_etcd() {
  local out="$1" version="$2" src="$cache/src/etcd-$version"
  rm -rf "$src"; mkdir -p "$src"
  printf 'module nimify.local/etcd-build\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n\ntool go.etcd.io/etcd/server/v3\n' "$version" >"$src/go.mod"
  log "resolving modules for etcd $version"
  (cd "$src" && go mod tidy 2>&1 | sed 's/^/[go mod tidy] /' >&2)
  (cd "$src" && go build -v -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3 2>&1 | progress "etcd $version")
  [[ -x "$out/etcd" ]] || { echo "ensure-binaries: etcd was not built" >&2; exit 1; }
}

build_kwok() {
  local out="$1" version="$2"
  (GOBIN="$out" go install -v -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$version" 2>&1 | progress "kwok $version")
  [[ -x "$out/kwok" ]] || { echo "ensure-binaries: kwok was not built" >&2; exit 1; }
  # kwok's own default pod stages, published in its module; the cluster launcher derives its config from them.
  local moddir
  moddir="$(go mod download -json "sigs.k8s.io/kwok@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  mkdir -p "$out/stages/pod"
  cp "$moddir"/kustomize/stage/pod/fast/pod-*.yaml "$out/stages/pod/"
  chmod u+w "$out"/stages/pod/*.yaml
}

# Helm from its own module (no replace directives, so `go install` works); the version ldflags are the ones
# Helm's Makefile sets, so `helm version` and `.Capabilities.KubeVersion` report what a release build would.
build_helm() {
  local out="$1" version="$2"
  local k8s_minor
  k8s_minor="$(go mod download -json "helm.sh/helm/v3@$version" | python3 -c 'import json,re,sys
mod = open(json.load(sys.stdin)["GoMod"]).read()
print(re.search(r"k8s.io/client-go v0\.(\d+)\.", mod).group(1))')"
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor"
  (GOBIN="$out" go install -v -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version" 2>&1 | progress "helm $version")
  [[ -x "$out/helm" ]] || { echo "ensure-binaries: helm was not built" >&2; exit 1; }
}

etcd_dir="$(build_component etcd "$ETCD_VERSION" build_etcd)"
kwok_dir="$(build_component kwok "$KWOK_VERSION" build_kwok)"
kube_dir="$(build_component kubernetes "$KUBERNETES_VERSION" build_kubernetes)"
helm_dir="$(build_component helm "$HELM_VERSION" build_helm)"
path="$kube_dir:$etcd_dir:$kwok_dir:$helm_dir"
if [[ "${NIMIFY_REAL_NODE:-auto}" != off ]]; then
  node_dir="$(build_component kubernetes-node "$KUBERNETES_VERSION" build_kubernetes_node)"
  path="$path:$node_dir"
fi
echo "$path"
