"""Benchmarks of the operator on the local control plane (run by `hack/bench-*`): figures, not tests."""
