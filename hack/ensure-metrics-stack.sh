#!/usr/bin/env bash
# Builds the dev cluster's metrics pipeline from published Go modules and caches it outside the clone:
#   $NIMIFY_CACHE_DIR/bin/metrics-server-<v>/metrics-server          (metrics.k8s.io: CPU from the kubelets)
#   $NIMIFY_CACHE_DIR/bin/prometheus-<v>/prometheus                   (scrapes Triton's metrics port)
#   $NIMIFY_CACHE_DIR/bin/keda-<v>/{keda-operator,keda-adapter,crds/} (ScaledObjects; external.metrics.k8s.io)
# Usage: ensure-metrics-stack.sh [metrics-server] [prometheus] [keda]   (default: all three)
# The cache/flock/atomic-rename pattern is copied from ensure-binaries.sh (build_component), so the two
# scripts stay independent; each build also leaves `.build-info` (seconds, bytes) for the CI budget.
# Progress goes to stderr; the last line on stdout is the search path of the built directories.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${NIMIFY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimify}"
mkdir -p "$cache/bin" "$cache/src" "$cache/locks"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
command -v go >/dev/null || { echo "ensure-metrics-stack: 'go' is not on PATH; install Go >= 1.26" >&2; exit 1; }

log() { printf '[ensure-metrics-stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# `go build -v` prints one line per compiled package; show a heartbeat instead of thousands of lines.
progress() {
  awk -v what="$1" '/^#|: |^go: / { print > "/dev/stderr"; next }
                    { n++; if (n % 100 == 0) { printf "[ensure-metrics-stack] %s: %d packages compiled (last: %s)\n", what, n, $0 > "/dev/stderr"; fflush("/dev/stderr") } }
                    END { printf "[ensure-metrics-stack] %s: %d packages compiled\n", what, n > "/dev/stderr" }'
}

# build_component NAME VERSION BUILDER: runs BUILDER OUTDIR VERSION under a lock unless the cache holds it.
build_component() {
  local name="$1" version="$2" builder="$3"
  local dest="$cache/bin/$name-$version"
  if [[ -f "$dest/.complete" ]]; then
    echo "$dest"; return
  fi
  exec {lockfd}>"$cache/locks/$name-$version.lock"
  log "waiting for the build lock of $name $version"
  flock "$lockfd"
  if [[ ! -f "$dest/.complete" ]]; then
    local tmp; tmp="$(mktemp -d "$cache/bin/.$name-$version.XXXXXX")"
    local start=$SECONDS
    log "building $name $version (cold builds take minutes; cached in $dest)"
    "$builder" "$tmp" "$version"
    local seconds=$((SECONDS - start)) bytes
    bytes="$(du -sb "$tmp" | cut -f1)"
    printf 'seconds=%s\nbytes=%s\n' "$seconds" "$bytes" >"$tmp/.build-info"
    touch "$tmp/.complete"
    rm -rf "$dest"; mv "$tmp" "$dest"
    log "built $name $version in ${seconds}s ($((bytes / 1024 / 1024)) MiB)"
  fi
  flock -u "$lockfd"; exec {lockfd}>&-
  echo "$dest"
}

# go_mod_dir MODULE@VERSION: the module's extracted source in the module cache.
go_mod_dir() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }

# wrapper_module SRC MODULE VERSION TOOL...: a small module of our own that requires MODULE@VERSION and
# carries over its non-local replace and exclude directives (Go ignores them in a dependency; KEDA needs
# one). No `go mod tidy`: it would download the test dependencies of every imported package (hundreds of
# modules); `go build -mod=mod` fetches only what the commands compile and records their sums.
wrapper_module() {
  local src="$1" module="$2" version="$3"; shift 3
  rm -rf "$src"; mkdir -p "$src"
  local gomod
  gomod="$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module nimify.local/$(basename "$src")"
    echo
    echo "go $(go mod edit -json "$gomod" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Go"])')"
    echo
    echo "require $module $version"
    echo
    for cmd in "$@"; do echo "tool $cmd"; done
  } >"$src/go.mod"
  local directives edits=()
  # A plain assignment, not a process substitution, so that `set -e` sees a failure here.
  directives="$(go mod edit -json "$gomod" | python3 -c '
import json, sys
mod = json.load(sys.stdin)
for replace in mod.get("Replace") or []:
    old, new = replace["Old"], replace["New"]
    if not new.get("Version"):
        continue  # a local path inside the module; nothing we could point at
    print("-replace=" + old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
          + "=" + new["Path"] + "@" + new["Version"])
for exclude in mod.get("Exclude") or []:
    print("-exclude=" + exclude["Path"] + "@" + exclude["Version"])
')"
  [[ -z "$directives" ]] || mapfile -t edits <<<"$directives"
  if ((${#edits[@]})); then
    (cd "$src" && go mod edit "${edits[@]}")
    log "carried over from $module's go.mod: ${edits[*]}"
  fi
}

build_metrics_server() {
  local out="$1" version="$2" src="$cache/src/metrics-server-$version"
  wrapper_module "$src" sigs.k8s.io/metrics-server "$version" sigs.k8s.io/metrics-server/cmd/metrics-server
  # metrics-server reports the client-go version variables as its own (its Makefile does the same).
  (cd "$src" && go build -v -trimpath \
      -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$version -X k8s.io/client-go/pkg/version.buildDate=1970-01-01T00:00:00Z" \
      -o "$out/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server 2>&1 | progress "metrics-server $version")
  [[ -x "$out/metrics-server" ]] || { echo "ensure-metrics-stack: metrics-server was not built" >&2; exit 1; }
}

# Prometheus' module versions are v0.3MM.P for release 3.MM.P.
prometheus_release() { local n="${1#v0.}"; n="${n%%.*}"; echo "$((n / 100)).$((n % 100)).${1##*.}"; }

build_prometheus() {
  local out="$1" version="$2" src="$cache/src/prometheus-$version"
  wrapper_module "$src" github.com/prometheus/prometheus "$version" github.com/prometheus/prometheus/cmd/prometheus
  # remove_all_sd + enable_kubernetes_sd leaves out the cloud service discoveries (AWS, Azure, GCE, ...)
  # that Prometheus compiles in by default; without the builtinassets tag the web UI is not embedded
  # (the HTTP API, which is all KEDA and the tests use, is unaffected).
  local release; release="$(prometheus_release "$version")"
  (cd "$src" && go build -v -trimpath -tags "netgo,remove_all_sd,enable_kubernetes_sd" \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=release -X github.com/prometheus/common/version.BuildDate=19700101-00:00:00" \
      -o "$out/prometheus" github.com/prometheus/prometheus/cmd/prometheus 2>&1 | progress "prometheus $version")
  [[ -x "$out/prometheus" ]] || { echo "ensure-metrics-stack: prometheus was not built" >&2; exit 1; }
}

build_keda() {
  local out="$1" version="$2" src="$cache/src/keda-$version"
  wrapper_module "$src" github.com/kedacore/keda/v2 "$version" \
    github.com/kedacore/keda/v2/cmd/operator github.com/kedacore/keda/v2/cmd/adapter
  local ldflags="-s -w -X github.com/kedacore/keda/v2/version.Version=${version#v} -X github.com/kedacore/keda/v2/version.GitCommit=module"
  # One `go build` for both commands shares the compile of everything they have in common.
  mkdir -p "$src/out"
  (cd "$src" && go build -v -trimpath -ldflags "$ldflags" -o "$src/out/" \
      github.com/kedacore/keda/v2/cmd/operator github.com/kedacore/keda/v2/cmd/adapter 2>&1 | progress "keda $version")
  mv "$src/out/operator" "$out/keda-operator"; mv "$src/out/adapter" "$out/keda-adapter"
  for b in keda-operator keda-adapter; do
    [[ -x "$out/$b" ]] || { echo "ensure-metrics-stack: $b was not built" >&2; exit 1; }
  done
  # KEDA's CRDs ship in its module; the dev cluster applies them from here.
  mkdir -p "$out/crds"
  cp "$(go_mod_dir "github.com/kedacore/keda/v2@$version")"/config/crd/bases/keda.sh_*.yaml "$out/crds/"
  chmod u+w "$out"/crds/*.yaml
}

components=("$@")
((${#components[@]})) || components=(metrics-server prometheus keda)
dirs=()
for component in "${components[@]}"; do
  case "$component" in
    metrics-server) dirs+=("$(build_component metrics-server "$METRICS_SERVER_VERSION" build_metrics_server)") ;;
    prometheus) dirs+=("$(build_component prometheus "$PROMETHEUS_VERSION" build_prometheus)") ;;
    keda) dirs+=("$(build_component keda "$KEDA_VERSION" build_keda)") ;;
    *) echo "ensure-metrics-stack: unknown component '$component' (metrics-server, prometheus, keda)" >&2; exit 2 ;;
  esac
done
(IFS=:; echo "${dirs[*]}")
