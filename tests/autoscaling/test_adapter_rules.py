"""prometheus-adapter rules: they name what the HPA asks for (the chart's copy is checked for staleness with
the chart's other generated files)."""

from __future__ import annotations

import yaml

from nimify.autoscaling.adapter_rules import prometheus_adapter_rules, render_rules_file
from nimify.autoscaling.queries import GPU_UTILIZATION_METRIC, QUEUE_TIME_METRIC
from nimify.render.autoscaler import render_autoscaler
from nimify.settings import OperatorSettings
from tests.render.conftest import nimservice


def test_rules_define_every_pods_metric_the_hpa_uses() -> None:
    spec = {
        "resources": {"gpus": 1},
        "autoscaling": {"maxReplicas": 2, "targetQueueTimeMicroseconds": 100, "targetGpuUtilization": 50},
    }
    hpa = render_autoscaler(nimservice(spec), OperatorSettings())
    assert hpa is not None
    asked = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    defined = {rule["name"]["as"] for rule in yaml.safe_load(render_rules_file())["rules"]}
    assert asked == defined == {QUEUE_TIME_METRIC, GPU_UTILIZATION_METRIC}


def test_rules_use_adapter_templates_and_resource_labels() -> None:
    for rule in prometheus_adapter_rules():
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }


def test_exported_labels_variant() -> None:
    rule = prometheus_adapter_rules(namespace_label="exported_namespace", pod_label="exported_pod")[1]
    assert rule["seriesQuery"] == 'DCGM_FI_DEV_GPU_UTIL{exported_namespace!="",exported_pod!=""}'
    assert set(rule["resources"]["overrides"]) == {"exported_namespace", "exported_pod"}
