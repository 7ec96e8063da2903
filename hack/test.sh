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
echo "== mypy"; .venv/bin/mypy
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
  # The whole suite as three pytest processes side by side. The session cluster's tests mostly wait on pods
  # and controllers: those of the real node (one per machine) run on a cluster that has it, the rest on a
  # kwok-only cluster of their own (then the heavy modules with kwok-only clusters of their own), and
  # everything else (unit tests, real tritonservers, other tests with clusters of their own) beside both.
  # Each process's exit code counts; the others' output follows.
  kwok_log="$(mktemp)"
  beside_log="$(mktemp)"
  trap 'rm -f "$kwok_log" "$beside_log"' EXIT
  echo "== pytest: the session cluster's tests of the real node (the others run beside them; their output follows)"
  NIMIFY_REAL_NODE=off .venv/bin/pytest -m "(session_cluster and not real_node) or own_cluster" --durations=10 \
    >"$kwok_log" 2>&1 &
  kwok=$!
  NIMIFY_REAL_NODE=off .venv/bin/pytest -m "not session_cluster and not own_cluster" --durations=15 \
    >"$beside_log" 2>&1 &
  beside=$!
  .venv/bin/pytest -m "session_cluster and real_node" --durations=10 || status=$?
  for part in "kwok:$kwok:$kwok_log:the session cluster's other tests (kwok-only), and own_cluster modules" \
              "beside:$beside:$beside_log:the other tests"; do
    IFS=: read -r _ pid log title <<<"$part"
    part_status=0
    wait "$pid" || part_status=$?
    echo "== pytest: $title"
    cat "$log"
    if [[ $part_status -ne 0 ]]; then status=$part_status; fi
  done
fi
if [[ $real_node == yes ]]; then
  echo "== real node leftovers"
  .venv/bin/nimify dev-cluster leftovers || status=1
fi
exit "$status"
