"""Which autoscaler a NimService gets."""

from __future__ import annotations

import pytest

from nimify.api.spec import Autoscaler
from nimify.autoscaling.choice import chosen_autoscaler
from nimify.settings import OperatorSettings
from tests.render.conftest import nimservice

SCALED = {"autoscaling": {"maxReplicas": 2, "targetQueueTimeMicroseconds": 100}}


def test_none_without_autoscaling() -> None:
    assert chosen_autoscaler(nimservice(), OperatorSettings()) is None


def test_operator_default_is_the_hpa() -> None:
    assert chosen_autoscaler(nimservice(SCALED), OperatorSettings()) == Autoscaler.HORIZONTAL_POD_AUTOSCALER


def test_setting_and_spec() -> None:
    keda = OperatorSettings(autoscaler=Autoscaler.KEDA)
    assert chosen_autoscaler(nimservice(SCALED), keda) == Autoscaler.KEDA
    hpa = {"autoscaling": {**SCALED["autoscaling"], "autoscaler": "HorizontalPodAutoscaler"}}
    assert chosen_autoscaler(nimservice(hpa), keda) == Autoscaler.HORIZONTAL_POD_AUTOSCALER


def test_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIMIFY_AUTOSCALER", "KEDA")
    assert OperatorSettings().autoscaler == Autoscaler.KEDA
