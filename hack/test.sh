#!/usr/bin/env bash
# The whole test suite: installs what it needs (virtualenv, Go-built control plane, and, as root, the real
# node's Debian packages, kubelet/kube-proxy and images), then lint, types, tests.
# Extra arguments go to pytest (e.g. `hack/test.sh -k devcluster`).
# NIMIFY_REAL_NODE=auto (default) runs the real-node tests wherever this machine can (root); `off` runs
# kwok-only clusters (next to another session that holds this machine's real node).
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

echo "== ruff"; .venv/bin/ruff check operator tests hack benchmarks; .venv/bin/ruff format --check operator tests hack benchmarks
# mypy's cache lives outside the clone (it checks every file's hash against it, so a fresh clone of the same
# code reuses it: 20 s of CPU saved on each run); one mypy at a time writes it.
cache="${NIMIFY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimify}"
mkdir -p "$cache/locks" "$cache/mypy"
echo "== mypy"; flock "$cache/locks/mypy.lock" env MYPY_CACHE_DIR="$cache/mypy" .venv/bin/mypy
if [[ $real_node == yes ]]; then
  # Built here (cached by content hash) so that progress shows; the cluster fixture finds them built.
  echo "== images"; .venv/bin/nimify dev-cluster images >/dev/null
fi
# pytest exits 5 when it collects nothing; that is a failure here, never a green run.
status=0
if [[ $# -gt 0 ]]; then
  echo "== pytest $*"
  .venv/bin/pytest "$@" || status=$?
else
  # The whole suite as four pytest processes side by side; the tests with clusters mostly wait on pods and
  # controllers, so together they keep both cores busy. The session cluster's tests of the real node (one
  # per machine) run on a cluster that has it; the session cluster's other tests on a kwok-only cluster of
  # their own; the heavy modules with kwok-only clusters of their own (marker own_cluster: the chaos suite's
  # operator kills, control-plane faults and hostile specs) one after another; and everything else (unit
  # tests, real tritonservers, lighter tests with clusters of their own). Each process's exit code counts;
  # the others' output follows.
  logs="$(mktemp -d)"
  trap 'rm -rf "$logs"' EXIT
  NIMIFY_REAL_NODE=off .venv/bin/pytest -m "session_cluster and not real_node" --durations=10 \
    >"$logs/kwok" 2>&1 &
  kwok=$!
  NIMIFY_REAL_NODE=off .venv/bin/pytest -m "own_cluster" --durations=10 >"$logs/own" 2>&1 &
  own=$!
  NIMIFY_REAL_NODE=off .venv/bin/pytest -m "not session_cluster and not own_cluster" --durations=15 \
    >"$logs/beside" 2>&1 &
  beside=$!
  echo "== pytest: the session cluster's tests of the real node (the others run beside them; their output follows)"
  .venv/bin/pytest -m "session_cluster and real_node" --durations=10 || status=$?
  for part in "kwok:$kwok:the session cluster's other tests (kwok-only)" \
              "own:$own:the modules with kwok-only clusters of their own (own_cluster)" \
              "beside:$beside:the other tests"; do
    IFS=: read -r log pid title <<<"$part"
    part_status=0
    wait "$pid" || part_status=$?
    echo "== pytest: $title"
    cat "$logs/$log"
    if [[ $part_status -ne 0 ]]; then status=$part_status; fi
  done
fi
if [[ $real_node == yes ]]; then
  echo "== real node leftovers"
  .venv/bin/nimify dev-cluster leftovers || status=1
fi
exit "$status"
