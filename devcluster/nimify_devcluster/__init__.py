"""A local Kubernetes control plane for development and tests: the `nimify-devcluster` distribution.

Real kube-apiserver, etcd, kube-controller-manager and kube-scheduler built from Go modules
(`hack/ensure-binaries.sh`), plus kwok, which plays the kubelet for fake GPU and CPU nodes.

A distribution of its own, installed into the development virtualenv (`hack/setup-venv.sh`) and never into the
operator's image: the operator's wheel carries nothing of it (`tests/install/test_operator_wheel.py`). It adds
`nimify dev-cluster` through the `nimify.cli` entry-point group (`nimify_devcluster.cli`).

Nothing is imported here: the `nimify` command loads `nimify_devcluster.cli` for every invocation in the
development virtualenv, and `cluster` alone takes a third of a second to import.
"""
