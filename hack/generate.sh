#!/usr/bin/env bash
# Regenerates every file generated from the code: the CRD and its field reference (from nimify.api), then the
# Helm chart's generated files (its copy of that CRD, the least-privilege RBAC, the values schema). Tests fail
# when any of them is stale; run this after changing the API, the child kinds or the operator settings.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash hack/setup-venv.sh
.venv/bin/nimify crd --output crds/ --docs docs/api.md
.venv/bin/nimify chart --output charts/nimify
