"""The chart as Helm renders it: lint, operator Deployment, RBAC modes, monitors, dashboard, adapter rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import nimify.controller.metrics  # noqa: F401  - registers the operator's metrics
from nimify.api.crd import CRD_FILENAME
from nimify.engine.location import EngineLocation
from nimify.render.autoscaler import GPU_UTILIZATION_METRIC, QUEUE_TIME_METRIC
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.pod_security import RUN_AS
from nimify.settings import OperatorSettings
from tests.install.helm import CHART, Helm, by_kind, one
from tests.render.conftest import nimservice, unit_of

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITORING = (
    "--api-versions=monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions=monitoring.coreos.com/v1/PodMonitor",
)


#: The series names Prometheus scrapes for each metric type (a family with no labels set yet has no samples).
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_lint_strict(helm: Helm) -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--set=watchNamespaces={team-a,team-b}")


def test_chart_crd_is_the_repository_crd() -> None:
    assert (CHART / "crds" / CRD_FILENAME).read_bytes() == (REPO_ROOT / "crds" / CRD_FILENAME).read_bytes(), (
        "charts/nimify/crds/ differs from crds/: run `bash hack/generate.sh`"
    )


def test_default_install_objects(helm: Helm) -> None:
    objects = helm.template()
    kinds = sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects)
    assert kinds == [
        ("ClusterRole", "nimify"),
        ("ClusterRole", "nimify-edit"),
        ("ClusterRole", "nimify-view"),
        ("ClusterRoleBinding", "nimify"),
        ("Deployment", "nimify"),
        ("Service", "nimify-metrics"),
        ("ServiceAccount", "nimify"),
    ]
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "nimify-system", obj["kind"]


def test_one_active_operator(helm: Helm) -> None:
    spec = one(helm.template(), "Deployment")["spec"]
    # Recreate: the old pod is gone before the new one starts, so two operators never reconcile at once.
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}


def test_pod_security_restricted(helm: Helm) -> None:
    pod = one(helm.template(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_identity_image_probes_and_shutdown(helm: Helm) -> None:
    objects = helm.template()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    (subject,) = one(objects, "ClusterRoleBinding")["subjects"]
    assert subject == {"kind": "ServiceAccount", "name": account, "namespace": "nimify-system"}
    container = operator_container(objects)
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"ghcr.io/nimify/nimify:{app_version}"
    assert container["command"] == ["nimify", "run"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert f"--liveness=http://0.0.0.0:{ports['health']}/healthz" in container["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["terminationGracePeriodSeconds"] == 30


def test_metrics_service_reaches_the_operator(helm: Helm) -> None:
    objects = helm.template("--set=metrics.port=9100")
    service = one(objects, "Service")
    template = one(objects, "Deployment")["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    env = {e["name"]: e["value"] for e in operator_container(objects)["env"]}
    assert env["NIMIFY_METRICS_PORT"] == "9100"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]


# Every setting with a value other than its default, as a platform team would set it.
SETTINGS: dict[str, Any] = {
    "builderImage": "registry.internal/nimify-builder:1.0-trt{release}",
    "onnxruntimeBuilderImage": "registry.internal/nimify:1.0",
    "buildPodLabels": {"cost-center": "ml"},
    "buildTtlSeconds": 600,
    "buildBackoffLimit": 2,
    "buildCpu": "2",
    "buildMemory": "8Gi",
    "buildMemoryLimit": "32Gi",
    "buildServiceAccount": "model-reader",
    "serverServiceAccount": "triton",
    "imagePullSecrets": ["nvcr-mirror", "internal"],
    "imagePullPolicy": "IfNotPresent",
    "engineCacheClaim": "engines",
    "engineCacheSize": "200Gi",
    "engineCacheAccessMode": "ReadWriteOnce",
    "resyncSeconds": 30.5,
    "autoscaler": "KEDA",
    "kedaPrometheusUrl": "http://prometheus.monitoring.svc:9090",
    "analysisPrometheusUrl": "http://thanos-query.monitoring.svc:9090",
    "kedaQueryWindow": "2m",
    "insecureRegistries": ["registry.dev.internal:5000"],
    "modelUriDeniedRanges": ["169.254.0.0/16", "fd00:ec2::254/128", "10.0.0.0/8"],
}


def test_every_setting_reaches_the_operator_as_it_reads_it(
    helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"settings": SETTINGS}))
    env = {e["name"]: e["value"] for e in operator_container(helm.template(f"--values={values}"))["env"]}
    for name in list(OperatorSettings.model_fields):
        monkeypatch.delenv(f"NIMIFY_{name.upper()}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    read = OperatorSettings()
    expected = OperatorSettings.model_validate(
        {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in SETTINGS.items()}
        | {"metrics_port": 8080}
    )
    assert read == expected
    assert set(env) - {"PYTHONDONTWRITEBYTECODE"} == {
        f"NIMIFY_{name.upper()}" for name in OperatorSettings.model_fields
    }, "every setting set, no other NIMIFY_* variable"


def test_onnxruntime_builder_defaults_to_the_operator_image(helm: Helm) -> None:
    objects = helm.template("--set=image.repository=registry.internal/nimify", "--set-string=image.tag=7")
    env = {e["name"]: e["value"] for e in operator_container(objects)["env"]}
    assert env["NIMIFY_ONNXRUNTIME_BUILDER_IMAGE"] == "registry.internal/nimify:7"
    assert operator_container(objects)["image"] == "registry.internal/nimify:7"


@pytest.mark.parametrize(
    "values",
    [
        ["--set=settings.engineCacheSzie=10Gi"],
        ["--set=settings.buildServiceAccount=Not_A_Name"],
        ["--set=image.pullPolicy=Sometimes"],
        ["--set=watchNamespaces=team-a"],
    ],
    ids=["unknown-setting", "bad-account-name", "bad-pull-policy", "namespaces-not-a-list"],
)
def test_schema_refuses_bad_values(helm: Helm, values: list[str]) -> None:
    result = helm("template", "nimify", str(CHART), *values, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_namespaced_mode_roles_per_namespace_and_nothing_cluster_wide(helm: Helm) -> None:
    objects = helm.template(
        "--set=watchNamespaces={team-a,team-b}", "--set=rbac.aggregateToDefaultRoles=false"
    )
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    roles = {role["metadata"]["namespace"]: role for role in by_kind(objects, "Role")}
    bindings = {binding["metadata"]["namespace"]: binding for binding in by_kind(objects, "RoleBinding")}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for namespace, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "nimify",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "nimify", "namespace": "nimify-system"}
        ]
        assert all("customresourcedefinitions" not in rule["resources"] for rule in roles[namespace]["rules"])
    args = operator_container(objects)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_monitors_only_where_the_prometheus_operator_is(helm: Helm) -> None:
    assert not by_kind(helm.template(), "ServiceMonitor") and not by_kind(helm.template(), "PodMonitor")
    objects = helm.template(*MONITORING)
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert not by_kind(
        helm.template(*MONITORING, "--set=metrics.serviceMonitor.enabled=false"), "ServiceMonitor"
    )


def test_pod_monitor_scrapes_the_triton_pods_the_operator_renders(helm: Helm) -> None:
    pod_monitor = one(helm.template(*MONITORING), "PodMonitor")
    nim = nimservice()
    triton = render_deployment(
        nim,
        unit_of(nim, EngineLocation("c" * 64, "nimify-engines")),
        ServedEngine("0" * 16),
        OperatorSettings(),
    )
    template = triton["spec"]["template"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    port_names = {port["name"] for port in template["spec"]["containers"][0]["ports"]}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in port_names
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    namespaced = one(helm.template(*MONITORING, "--set=watchNamespaces={team-a}"), "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_grafana_dashboard_shows_every_operator_metric_and_only_real_ones(helm: Helm) -> None:
    configmap = one(helm.template("--set=grafanaDashboard.enabled=true"), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["nimify.json"])
    exprs = " ".join(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
    used = set(re.findall(r"\bnimify_[a-z_]+", exprs))
    exposed = {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("nimify_")
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))
    }
    assert used <= exposed, f"the dashboard queries metrics the operator does not expose: {used - exposed}"
    families = {family.name for family in REGISTRY.collect() if family.name.startswith("nimify_")}
    unshown = sorted(family for family in families if not any(name.startswith(family) for name in used))
    assert unshown == [], f"add panels for {unshown} to charts/nimify/files/grafana-dashboard.json"
    assert not by_kind(helm.template(), "ConfigMap")


def test_adapter_rules_define_the_metrics_the_autoscaler_targets(helm: Helm) -> None:
    configmap = one(helm.template("--set=prometheusAdapter.rulesConfigMap.enabled=true"), "ConfigMap")
    rules = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    assert {rule["name"]["as"] for rule in rules} == {QUEUE_TIME_METRIC, GPU_UTILIZATION_METRIC}
    for rule in rules:
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
