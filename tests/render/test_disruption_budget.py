"""The PodDisruptionBudget: only where there is more than one replica to keep serving through a drain."""

from __future__ import annotations

from typing import Any

import pytest

from nimify.render.disruption_budget import render_disruption_budget, wants_disruption_budget
from nimify.render.identity import server_selector
from tests.render.conftest import NAME, nimservice


@pytest.mark.parametrize(
    ("spec", "wanted"),
    [
        (None, False),
        ({"replicas": 0}, False),
        ({"replicas": 1}, False),
        ({"replicas": 2}, True),
        ({"autoscaling": {"maxReplicas": 1, "targetGpuUtilization": 60}}, False),
        ({"autoscaling": {"maxReplicas": 2, "targetGpuUtilization": 60}}, True),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 6, "targetGpuUtilization": 60}}, True),
    ],
)
def test_only_with_more_than_one_replica(spec: dict[str, Any] | None, wanted: bool) -> None:
    nim = nimservice(spec)
    assert wants_disruption_budget(nim) is wanted
    assert (render_disruption_budget(nim) is not None) is wanted


def test_budget() -> None:
    nim = nimservice({"replicas": 3})
    pdb = render_disruption_budget(nim)
    assert pdb is not None
    assert pdb["apiVersion"] == "policy/v1" and pdb["kind"] == "PodDisruptionBudget"
    assert pdb["metadata"]["name"] == NAME
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": server_selector(nim)}}
