#!/usr/bin/env bash
# The demo: a local Kubernetes control plane with simulated GPU node pools, left running for you to use.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="${NIMIFY_DEMO_CLUSTER:-demo}"

# A fresh cluster each time: a leftover one (e.g. after a reboot) would have dead processes.
bash "$root/hack/cluster.sh" down "$name" >/dev/null 2>&1 || true
kubeconfig="$(bash "$root/hack/cluster.sh" up "$name" | tail -n1)"
kubectl="$(bash "$root/hack/ensure-binaries.sh" | cut -d: -f1)/kubectl"

echo
echo "GPU node pools:"
"$kubectl" --kubeconfig "$kubeconfig" get nodes -L nvidia.com/gpu.product -L nvidia.com/gpu.count
echo
echo "The cluster keeps running. Use it with:"
echo "  export KUBECONFIG=$kubeconfig PATH=$(dirname "$kubectl"):\$PATH"
echo "Stop it with:"
echo "  bash hack/cluster.sh down $name"
