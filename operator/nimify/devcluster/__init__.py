"""A local Kubernetes control plane for development and tests.

Real kube-apiserver, etcd, kube-controller-manager and kube-scheduler built from Go modules
(`hack/ensure-binaries.sh`), plus kwok, which plays the kubelet for fake GPU and CPU nodes.
"""

from nimify.devcluster.cluster import LocalCluster, start_cluster, stop_cluster

__all__ = ["LocalCluster", "start_cluster", "stop_cluster"]
