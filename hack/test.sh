#!/usr/bin/env bash
# The whole test suite: installs what it needs (virtualenv, Go-built control plane), then lint, types, tests.
# Extra arguments go to pytest (e.g. `hack/test.sh -k devcluster`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash hack/setup-venv.sh
NIMIFY_BIN_PATH="$(bash hack/ensure-binaries.sh)"
export NIMIFY_BIN_PATH
# The real TensorRT bindings (no libraries, no GPU) the fake is checked against.
NIMIFY_TENSORRT_BINDINGS="$(bash hack/ensure-tensorrt-bindings.sh)"
export NIMIFY_TENSORRT_BINDINGS

echo "== ruff"; .venv/bin/ruff check operator tests hack benchmarks; .venv/bin/ruff format --check operator tests hack benchmarks
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
# pytest exits 5 when it collects nothing; that is a failure here, never a green run.
exec .venv/bin/pytest "$@"
