#!/usr/bin/env bash
# Builds the dev cluster's metrics pipeline from published Go modules and caches it outside the clone:
#   $NIMIFY_CACHE_DIR/bin/keda-metrics-server-<keda>-<metrics-server>/
#     keda-operator, keda-adapter  (ScaledObjects; external.metrics.k8s.io)   github.com/kedacore/keda/v2
#     metrics-server               (metrics.k8s.io: CPU from the kubelets)     sigs.k8s.io/metrics-server
#     crds/                        KEDA's CRDs (keda.sh, eventing.keda.sh), from its module
#   $NIMIFY_CACHE_DIR/bin/prometheus-<v>/prometheus  (scrapes Triton's metrics port)  github.com/prometheus/prometheus
# Two builds: KEDA and metrics-server in one module (they share nearly all of metrics-server's packages),
# Prometheus in its own (see build_prometheus for why). PROMETHEUS_VERSION is the one KEDA requires, so the
# two builds still share the compiled packages whose versions coincide (Go's build cache).
# The cache, its locks and atomic renames: hack/build-cache.sh (shared with ensure-binaries.sh); each build
# leaves `.build-info` (seconds, bytes) for the CI budget.
# Progress goes to stderr; the last line on stdout is the search path of the two directories.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

tag=ensure-metrics-stack
# shellcheck source=build-cache.sh
source "$here/build-cache.sh"
command -v go >/dev/null || { echo "ensure-metrics-stack: 'go' is not on PATH; install Go >= 1.26" >&2; exit 1; }

gomod_of() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["'"$2"'"])'; }

# The non-local replace and exclude directives of a go.mod, as `go mod edit` flags. Go ignores them in a
# dependency, so the build module must repeat them (KEDA needs one of each).
carried_directives() {
  go mod edit -json "$1" | python3 -c '
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
'
}

# Prometheus' module versions are v0.3MM.P for release 3.MM.P.
prometheus_release() { local n="${1#v0.}"; n="${n%%.*}"; echo "$((n / 100)).$((n % 100)).${1##*.}"; }

LDFLAGS="-s -w"
LDFLAGS+=" -X github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v} -X github.com/kedacore/keda/v2/version.GitCommit=module"
# metrics-server reports the client-go version variables as its own (its Makefile sets them).
LDFLAGS+=" -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION -X k8s.io/client-go/pkg/version.buildDate=1970-01-01T00:00:00Z"
LDFLAGS+=" -X github.com/prometheus/common/version.Version=$(prometheus_release "$PROMETHEUS_VERSION")"
LDFLAGS+=" -X github.com/prometheus/common/version.Branch=release -X github.com/prometheus/common/version.BuildDate=19700101-00:00:00"

# go_build_modules SRC OUT "MODULE@VERSION ..." "COMMAND ..." TAGS: one generated module requiring the given
# modules (with their carried-over directives) and one `go build` of the commands into OUT.
go_build_modules() {
  local src="$1" out="$2" tags="$5" modules commands
  read -r -a modules <<<"$3"; read -r -a commands <<<"$4"
  rm -rf "$src"; mkdir -p "$src"
  local go_version
  go_version="$(go mod edit -json "$(gomod_of "${modules[0]}" GoMod)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Go"])')"
  {
    echo "module nimify.local/$(basename "$src")"
    echo
    echo "go $go_version"
    echo
    for module in "${modules[@]}"; do echo "require ${module%@*} ${module#*@}"; done
    echo
    for command in "${commands[@]}"; do echo "tool $command"; done
  } >"$src/go.mod"
  local directives="" edits=()
  for module in "${modules[@]}"; do
    # Plain assignments, not process substitutions, so that `set -e` sees a failure.
    directives+="$(carried_directives "$(gomod_of "$module" GoMod)")"$'\n'
  done
  mapfile -t edits < <(grep -v '^$' <<<"$directives" | sort -u || true)
  if ((${#edits[@]})); then
    (cd "$src" && go mod edit "${edits[@]}")
    log "carried over from the modules' go.mod: ${edits[*]}"
  fi
  # No `go mod tidy`: it would download the test dependencies of every imported package (hundreds of
  # modules); `go build -mod=mod` fetches only what the commands compile and records their sums.
  mkdir -p "$out"
  (cd "$src" && go build -v -trimpath -tags "$tags" -ldflags "$LDFLAGS" -o "$out/" "${commands[@]}" 2>&1 \
      | progress "$(basename "$src")")
  # Minimal version selection may have raised a pinned module to what another one requires: say so.
  for module in "${modules[@]}"; do
    local selected; selected="$(cd "$src" && go list -m -f '{{.Version}}' "${module%@*}")"
    if [[ "$selected" != "${module#*@}" ]]; then
      echo "ensure-metrics-stack: ${module%@*} resolved to $selected, not ${module#*@}; pin $selected in hack/versions.env" >&2
      exit 1
    fi
  done
}

# KEDA and metrics-server share one build: KEDA's graph holds all but ~30 of metrics-server's packages
# (apiserver, client-go, otel, grpc), which then compile once.
build_keda_metrics_server() {
  local out="$1" src="$cache/src/keda-metrics-server-$2"
  local keda="github.com/kedacore/keda/v2@$KEDA_VERSION"
  go_build_modules "$src" "$src/out" "$keda sigs.k8s.io/metrics-server@$METRICS_SERVER_VERSION" \
    "github.com/kedacore/keda/v2/cmd/operator github.com/kedacore/keda/v2/cmd/adapter sigs.k8s.io/metrics-server/cmd/metrics-server" ""
  mv "$src/out/operator" "$out/keda-operator"; mv "$src/out/adapter" "$out/keda-adapter"
  mv "$src/out/metrics-server" "$out/"
  for b in keda-operator keda-adapter metrics-server; do
    [[ -x "$out/$b" ]] || { echo "ensure-metrics-stack: $b was not built" >&2; exit 1; }
  done
  keda_crds "$out"
  rm -rf "$src/out"
}

# KEDA's CRDs ship in its module; the dev cluster applies them from DIR/crds. All of them: KEDA's operator
# also watches the eventing.keda.sh kinds (CloudEventSource) and exits when their informers cannot sync,
# two minutes after it starts. Run on every call too, for caches built when only keda.sh's were copied
# (each file lands with an atomic rename, so concurrent runs are harmless).
keda_crds() {
  local crds="$1/crds" bases
  bases="$(gomod_of "github.com/kedacore/keda/v2@$KEDA_VERSION" Dir)/config/crd/bases"
  mkdir -p "$crds"
  for crd in "$bases"/*.yaml; do
    local name; name="$(basename "$crd")"
    [[ -f "$crds/$name" ]] && continue
    cp "$crd" "$crds/.$name.tmp"; chmod u+w "$crds/.$name.tmp"; mv "$crds/.$name.tmp" "$crds/$name"
    log "added KEDA's CRD $name to $crds"
  done
}

# Prometheus builds apart: in KEDA's graph minimal version selection takes KEDA's github.com/gobwas/glob
# v1.0.0, whose API the OpenTelemetry collector packages Prometheus compiles (confmap) do not build with.
# remove_all_sd + enable_kubernetes_sd leave out the cloud service discoveries (AWS, Azure, GCE, ...) that
# Prometheus compiles in by default; without the builtinassets tag the web UI is not embedded (the HTTP API,
# all that KEDA and the tests use, is unaffected).
build_prometheus() {
  local out="$1" src="$cache/src/prometheus-$2"
  go_build_modules "$src" "$out" "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" \
    "github.com/prometheus/prometheus/cmd/prometheus" "remove_all_sd,enable_kubernetes_sd"
  [[ -x "$out/prometheus" ]] || { echo "ensure-metrics-stack: prometheus was not built" >&2; exit 1; }
}

keda_dir="$(build_component keda-metrics-server "$KEDA_VERSION-$METRICS_SERVER_VERSION" build_keda_metrics_server)"
keda_crds "$keda_dir"
prometheus_dir="$(build_component prometheus "$PROMETHEUS_VERSION" build_prometheus)"
echo "$keda_dir:$prometheus_dir"
