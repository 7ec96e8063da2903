"""The PromQL behind the autoscaling metrics (evaluated by a real Prometheus in tests/devcluster)."""

from __future__ import annotations

import re

import pytest

from nimify.autoscaling.queries import deployment_pods_selector, gpu_utilization, queue_time_per_request


def pod_regex(selector: str) -> re.Pattern[str]:
    """The pod regex of a selector, as Prometheus (anchored RE2) and a PromQL string would read it."""
    quoted = re.search(r'pod=~"(.*)"', selector)
    assert quoted is not None
    return re.compile(quoted.group(1).replace("\\\\", "\\"))


def test_selector_matches_only_the_deployments_pods() -> None:
    regex = pod_regex(deployment_pods_selector("ml", "resnet"))
    assert regex.fullmatch("resnet-7d9f8c6b5-x2k4q")
    for other in ("resnet-v2-7d9f8c6b5-x2k4q", "resnet-7d9f8c6b5", "xresnet-7d9f8c6b5-x2k4q", "resnet--a"):
        assert not regex.fullmatch(other), other


def test_dots_are_literal() -> None:
    selector = deployment_pods_selector("ml", "resnet.v1")
    assert 'pod=~"resnet\\\\.v1-' in selector
    regex = pod_regex(selector)
    assert regex.fullmatch("resnet.v1-7d9f8c6b5-x2k4q") and not regex.fullmatch("resnetxv1-7d9f8c6b5-x2k4q")


@pytest.mark.parametrize("name", ['a"b', "A", "a b", "-a"])
def test_refuses_what_is_not_an_object_name(name: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes object name"):
        deployment_pods_selector("ml", name)


def test_queue_time_per_request() -> None:
    assert queue_time_per_request('pod="p"', "30s") == (
        'sum(increase(nv_inference_queue_duration_us{pod="p"}[30s]))'
        ' / (1 + sum(increase(nv_inference_request_success{pod="p"}[30s])))'
    )
    by_pod = queue_time_per_request("<<.LabelMatchers>>", "1m", by="<<.GroupBy>>")
    assert by_pod.count("by (<<.GroupBy>>)") == 2


def test_window_must_be_a_duration() -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        queue_time_per_request('pod="p"', "30 seconds")


def test_gpu_utilization() -> None:
    assert gpu_utilization('pod="p"') == 'avg(DCGM_FI_DEV_GPU_UTIL{pod="p"})'
    assert gpu_utilization('pod="p"', by="pod") == 'avg(DCGM_FI_DEV_GPU_UTIL{pod="p"}) by (pod)'
