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
  # The whole suite as two pytest processes side by side: the tests on the session's cluster (one per
  # machine: it may hold the real node) mostly wait on pods and controllers, so everything else (unit
  # tests, real tritonservers, tests with clusters of their own, kwok-only) runs beside them instead of
  # after them. Each half's exit code counts; the second half's output follows the first's.
  beside_log="$(mktemp)"
  trap 'rm -f "$beside_log"' EXIT
  echo "== pytest: tests on the session's cluster (the other tests run beside them; their output follows)"
  NIMIFY_REAL_NODE=off .venv/bin/pytest -m "not session_cluster" --durations=15 >"$beside_log" 2>&1 &
  beside=$!
  .venv/bin/pytest -m session_cluster --durations=15 || status=$?
  beside_status=0
  wait "$beside" || beside_status=$?
  echo "== pytest: the other tests (beside the cluster's)"
  cat "$beside_log"
  if [[ $beside_status -ne 0 ]]; then status=$beside_status; fi
fi
if [[ $real_node == yes ]]; then
  echo "== real node leftovers"
  .venv/bin/nimify dev-cluster leftovers || status=1
fi
exit "$status"
