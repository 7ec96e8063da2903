"""Helpers of devcluster/cluster.py that need no running cluster."""

from __future__ import annotations

import subprocess

import pytest

from nimify_devcluster.cluster import ClusterError, wait_established

ACCESSOR_ERROR = (
    "error: .status.conditions accessor error: <nil> is of the type <nil>, expected []interface{}"
)


class FakeKubectl:
    """Answers `kubectl wait` as the apiserver does for a CRD that gets its conditions after `fails` asks."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls: list[tuple[str, ...]] = []

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        failed = len(self.calls) <= self.fails
        return subprocess.CompletedProcess(args, 1 if failed else 0, "", ACCESSOR_ERROR if failed else "")


def test_a_crd_without_conditions_yet_is_asked_again() -> None:
    kubectl = FakeKubectl(fails=2)
    wait_established(kubectl, "nimservices.nimify.dev", timeout=10)
    assert len(kubectl.calls) == 3
    assert kubectl.calls[0][:3] == ("wait", "--for=condition=Established", "crd/nimservices.nimify.dev")


def test_a_crd_never_established_names_itself_and_the_answer() -> None:
    expected = r"nimservices\.nimify\.dev not Established in 1s: .*accessor error"
    with pytest.raises(ClusterError, match=expected):
        wait_established(FakeKubectl(fails=1000), "nimservices.nimify.dev", timeout=1)
