#!/usr/bin/env bash
# The demo: a local Kubernetes control plane with simulated GPU node pools and (as root) a real node, Nimify
# installed with its Helm chart (the operator as a pod on the real node), and a NimService serving a small ONNX
# model; it ends by printing an inference answer from the Triton pod next to ONNX Runtime's. Everything is left
# running to explore. NIMIFY_REAL_NODE=off gives the kwok-only demo (the operator as a process here, simulated
# Triton pods, no inference).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="${NIMIFY_DEMO_CLUSTER:-demo}"

if [[ "$(id -u)" == 0 && "${NIMIFY_REAL_NODE:-auto}" != off ]]; then
  bash "$root/hack/ensure-packages.sh"  # containerd, runc, CNI plugins, buildah, mmdebstrap, iptables
fi
bash "$root/hack/setup-venv.sh"
bin_path="$(bash "$root/hack/ensure-binaries.sh")"
# A fresh cluster each time: a leftover one (e.g. after a reboot) would have dead processes.
"$root/.venv/bin/nimify" dev-cluster down --name "$name" >/dev/null 2>&1 || true
"$root/.venv/bin/nimify" dev-cluster demo --name "$name" --bin-path "$bin_path"
kubeconfig="$("$root/.venv/bin/nimify" dev-cluster kubeconfig --name "$name")"

echo "The cluster, the operator and the NimService keep running. Use them with:"
echo "  export KUBECONFIG=$kubeconfig PATH=$bin_path:\$PATH"
echo "  kubectl get nimservices -A; kubectl describe nimservice -n demo mlp-classifier"
echo "  helm list -n nimify-system; kubectl logs -n nimify-system deployment/nimify   # with the real node"
echo "Stop everything (the real node leaves nothing behind) with:"
echo "  bash hack/cluster.sh down $name"
