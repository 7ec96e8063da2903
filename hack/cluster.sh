#!/usr/bin/env bash
# Start or stop a local cluster built from Go modules:   hack/cluster.sh up [NAME] | down [NAME]
# `up` prints the kubeconfig path as its last line. As root it adds the real node (containerd + kubelet,
# real pods) unless NIMIFY_REAL_NODE=off; one real node per machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
action="${1:?usage: hack/cluster.sh up|down [NAME]}"
name="${2:-nimify}"
bash "$root/hack/setup-venv.sh"
case "$action" in
  up)
    if [[ "$(id -u)" == 0 && "${NIMIFY_REAL_NODE:-auto}" != off ]]; then bash "$root/hack/ensure-packages.sh"; fi
    bin_path="$(bash "$root/hack/ensure-binaries.sh")"
    exec "$root/.venv/bin/nimify" dev-cluster up --name "$name" --bin-path "$bin_path" ;;
  down)
    exec "$root/.venv/bin/nimify" dev-cluster down --name "$name" ;;
  *) echo "usage: hack/cluster.sh up|down [NAME]" >&2; exit 2 ;;
esac
