#!/usr/bin/env bash
# Creates .venv with nimify and its dev dependencies, and the development cluster (devcluster/, distribution
# nimify-devcluster, which adds `nimify dev-cluster`), both editable; reinstalls only when either
# pyproject.toml changed.
# uv's cache lives outside the clone (~/.cache/uv), so a warm machine installs in seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup-venv: Python >= 3.11 required ($("$python" --version))" >&2; exit 1; }

stamp="$venv/.nimify-deps-$(cat "$root/pyproject.toml" "$root/devcluster/pyproject.toml" | sha256sum | cut -c1-16)"
if [[ -f "$stamp" ]]; then exit 0; fi

echo "[setup-venv] installing Python dependencies into $venv" >&2
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
# uv installs from its cache outside the clone (~/.cache/uv) by hard links: seconds instead of pip's ~45 s
# for the ~150 packages on a warm machine. It comes from PyPI like everything else.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==0.13.9" >&2
"$venv/bin/uv" pip install --python "$venv/bin/python" -e "$root[dev]" -e "$root/devcluster" >&2
rm -f "$venv"/.nimify-deps-*
touch "$stamp"
