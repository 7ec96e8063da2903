"""Children that match the spec, on a real control plane: unwanted ones deleted, out-of-band edits reverted,
refusals reported, routes rendered, Triton pods' trouble named.

Triton pods run on kwok. Where a test needs a pod in a state kwok does not produce (a crash loop, a failed
image pull, an OOM kill), it labels the pod `kwok.x-k8s.io/status: custom`, so kwok leaves it alone, and
writes the pod's status as a kubelet would: the status is simulated, everything the operator does with it is
real. The unschedulable case is real: the scheduler finds no node with that many GPUs.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimify_devcluster.build_runner import BuildPodKubelet
from nimify_devcluster.cluster import get_json
from nimify_devcluster.gateway import GATEWAY_CRDS, gateway_api_served, install_gateway_api
from nimify_devcluster.topology import KWOK_CUSTOM_STATUS_LABEL
from tests.controller.conftest import E2E, L4, OperatorProcess, apply, condition, nimservice, wait_ready
from tests.fetched import fetched_dir
from tests.kube import ExistingCluster, eventually

pytestmark = pytest.mark.cluster

RESYNC_SECONDS = 10  # what the operator fixture sets (NIMIFY_RESYNC_SECONDS)


def get(cluster: ExistingCluster, what: str, ns: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "-o", "json", what, "-n", ns, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def reason_of(cluster: ExistingCluster, ns: str, name: str, kind: str = "Ready") -> tuple[str, str, str]:
    found = condition(cluster, ns, name, kind) or {}
    return found.get("status", ""), found.get("reason", ""), found.get("message", "")


def wait_reason(
    cluster: ExistingCluster, ns: str, name: str, reason: str, timeout: float = 60
) -> tuple[str, str]:
    """(status, message) of the Ready condition once it has `reason`."""

    def reached() -> tuple[str, str] | None:
        status, found, message = reason_of(cluster, ns, name)
        return (status, message) if found == reason else None

    result: tuple[str, str] = eventually(reached, timeout=timeout)
    return result


def triton_image(cluster: ExistingCluster, ns: str, name: str) -> str:
    containers = get_json(cluster, f"deployment/{name}", "-n", ns)["spec"]["template"]["spec"]["containers"]
    return str(containers[0]["image"])


def warning_events(cluster: ExistingCluster, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    selector = f"type=Warning,involvedObject.name={name},reason={reason}"
    return list(get_json(cluster, "events", "-n", ns, f"--field-selector={selector}")["items"])


# --- the Gateway API, installed from its published module, or absent ----------------------------------------


@contextlib.contextmanager
def _builds_paused(builds: BuildPodKubelet) -> Iterator[None]:
    """While CRDs come and go, API discovery changes under kubectl: the build runner (it polls with kubectl)
    waits meanwhile rather than trip over it."""
    builds.hold.set()
    try:
        yield
    finally:
        builds.hold.clear()


@pytest.fixture
def gateway_api(cluster: ExistingCluster, build_runner: BuildPodKubelet) -> None:
    """The Gateway API's standard CRDs, installed and served."""
    crds = fetched_dir(
        "NIMIFY_GATEWAY_API_DIR", "ensure-gateway-api.sh"
    )  # first a download: before the pause
    with _builds_paused(build_runner):
        install_gateway_api(cluster, crds)


@pytest.fixture
def no_gateway_api(
    cluster: ExistingCluster, build_runner: BuildPodKubelet, operator: OperatorProcess
) -> None:
    """A cluster that does not serve the Gateway API (its CRDs removed if an earlier test installed them).

    The operator is stopped meanwhile: kopf ends when an API it is watching disappears under a watch (a
    Deployment's restart brings it back; here the fixture does), and it starts fine without the CRDs.
    """
    names = [f"{plural}.gateway.networking.k8s.io" for plural in GATEWAY_CRDS]
    if not gateway_api_served(cluster):
        return
    operator.stop()
    try:
        with _builds_paused(build_runner):
            cluster.kubectl(
                "delete", "crd", *names, "--ignore-not-found", "--wait=true", "--timeout=180s", timeout=200
            )  # a loaded apiserver takes its time to empty a CRD
            eventually(lambda: not gateway_api_served(cluster))
    finally:
        operator.start()


# --- children no longer wanted ------------------------------------------------------------------------------


def test_autoscaling_off_removes_the_hpa_and_the_deployment_follows_spec_replicas(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    resources = {"gpus": 1, "gpuProduct": L4, "cpu": "1"}
    autoscaling = {"minReplicas": 1, "maxReplicas": 4, "targetCpuUtilization": 80}
    apply(cluster, ns, nimservice("scaler", models["mlp"], autoscaling=autoscaling, resources=resources))
    wait_ready(cluster, ns, "scaler")
    assert get(cluster, "hpa/scaler", ns) is not None

    apply(cluster, ns, nimservice("scaler", models["mlp"], replicas=2, resources=resources))
    eventually(lambda: get(cluster, "hpa/scaler", ns) is None)
    eventually(lambda: get_json(cluster, "deployment/scaler", "-n", ns)["spec"]["replicas"] == 2)
    wait_ready(cluster, ns, "scaler")
    nim = get_json(cluster, "nimservice/scaler", "-n", ns)
    assert nim["status"]["readyReplicas"] == 2


def test_going_down_to_one_replica_removes_the_disruption_budget(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("budget", models["mlp"], replicas=3))
    wait_ready(cluster, ns, "budget")
    assert get(cluster, "pdb/budget", ns) is not None
    apply(cluster, ns, nimservice("budget", models["mlp"], replicas=1))
    eventually(lambda: get(cluster, "pdb/budget", ns) is None)
    wait_ready(cluster, ns, "budget")


def test_ingress_comes_and_goes_with_the_spec(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    ingress = {"host": "mlp.example.com", "className": "nginx", "tlsSecret": "mlp-tls"}
    apply(cluster, ns, nimservice("routed", models["mlp"], expose={"ingress": ingress}))
    wait_ready(cluster, ns, "routed")
    live = get_json(cluster, "ingress/routed", "-n", ns)
    assert live["spec"]["ingressClassName"] == "nginx"
    assert live["spec"]["rules"][0]["host"] == "mlp.example.com"
    backend = live["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "routed", "port": {"number": 8000}}
    assert live["spec"]["tls"] == [{"hosts": ["mlp.example.com"], "secretName": "mlp-tls"}]
    endpoints = get_json(cluster, "nimservice/routed", "-n", ns)["status"]["endpoints"]
    assert endpoints["external"] == "mlp.example.com"

    apply(cluster, ns, nimservice("routed", models["mlp"]))
    eventually(lambda: get(cluster, "ingress/routed", ns) is None)
    eventually(
        lambda: "external" not in get_json(cluster, "nimservice/routed", "-n", ns)["status"]["endpoints"]
    )


def test_network_policy_comes_and_goes_with_the_spec(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    clients = [{"namespaceSelector": {"team": "apps"}}]
    policy = {
        "clients": clients,
        "metricsClients": [{"namespaceSelector": {"kubernetes.io/metadata.name": "monitoring"}}],
    }
    apply(cluster, ns, nimservice("fenced", models["mlp"], expose={"networkPolicy": policy}))
    wait_ready(cluster, ns, "fenced")
    live = eventually(lambda: get(cluster, "networkpolicy/fenced", ns))
    assert live["spec"]["podSelector"]["matchLabels"]["nimify.dev/nimservice"] == "fenced"
    rules = live["spec"]["ingress"]
    assert [[p["port"] for p in rule["ports"]] for rule in rules] == [["http", "grpc"], ["metrics"]]
    assert rules[0]["from"] == [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}]
    pods = get_json(cluster, "pods", "-n", ns, "-l", "app.kubernetes.io/instance=fenced")["items"]
    selected = live["spec"]["podSelector"]["matchLabels"]
    fenced = [p for p in pods if selected.items() <= p["metadata"]["labels"].items()]
    triton = [p for p in pods if p["metadata"]["labels"]["app.kubernetes.io/component"] == "inference-server"]
    assert triton and fenced == triton, "it fences the Triton pods, not the conversion's"

    apply(cluster, ns, nimservice("fenced", models["mlp"]))
    eventually(lambda: get(cluster, "networkpolicy/fenced", ns) is None)


def test_http_route_comes_and_goes_with_the_spec(e2e: E2E, gateway_api: None) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    route = {"host": "mlp.example.com", "gatewayRef": {"name": "public", "namespace": "gateways"}}
    apply(cluster, ns, nimservice("gated", models["mlp"], expose={"httpRoute": route}))
    wait_ready(cluster, ns, "gated", timeout=180)  # kopf starts watching HTTPRoutes once it sees the CRD
    live = get_json(cluster, "httproute/gated", "-n", ns)
    assert live["spec"]["hostnames"] == ["mlp.example.com"]
    assert live["spec"]["parentRefs"][0] | {"group": "", "kind": ""} == {
        "name": "public",
        "namespace": "gateways",
        "group": "",
        "kind": "",
    }
    assert live["spec"]["rules"][0]["backendRefs"][0]["name"] == "gated"
    assert live["spec"]["rules"][0]["backendRefs"][0]["port"] == 8000
    assert (
        get_json(cluster, "nimservice/gated", "-n", ns)["status"]["endpoints"]["external"]
        == "mlp.example.com"
    )

    apply(cluster, ns, nimservice("gated", models["mlp"]))
    eventually(lambda: get(cluster, "httproute/gated", ns) is None)


def test_http_route_without_the_gateway_api_is_a_clear_condition(e2e: E2E, no_gateway_api: None) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("plain", models["mlp"]))
    wait_ready(cluster, ns, "plain")  # the operator runs fine without the CRDs
    route = {"host": "mlp.example.com", "gatewayRef": {"name": "public"}}
    apply(cluster, ns, nimservice("plain", models["mlp"], expose={"httpRoute": route}))
    status, message = wait_reason(cluster, ns, "plain", "GatewayApiMissing")
    assert status == "False"
    assert "gateway.networking.k8s.io/v1 httproutes" in message
    assert warning_events(cluster, ns, "plain", "GatewayApiMissing")
    available = condition(cluster, ns, "plain", "Available")
    assert available is not None and available["status"] == "True", "serving goes on"


# --- drift --------------------------------------------------------------------------------------------------


def _editor(tmp_path: Path, name: str, *sed: str) -> dict[str, str]:
    """An editor for `kubectl edit` that applies sed expressions, as a person would change the YAML."""
    script = tmp_path / f"edit-{name}.sh"
    script.write_text(
        "#!/bin/sh\nexec sed -i " + " ".join(f"-e '{expression}'" for expression in sed) + ' "$1"\n'
    )
    script.chmod(0o755)
    return {"KUBE_EDITOR": str(script), "EDITOR": str(script)}


def _timed(what: str, check: Any, timeout: float) -> float:
    started = time.monotonic()
    eventually(check, timeout=timeout)
    seconds = time.monotonic() - started
    print(f"{what} reverted after {seconds:.1f} s")
    return seconds


def test_out_of_band_edits_are_reverted_within_one_resync(
    e2e: E2E, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("drift", models["mlp"], replicas=2))
    wait_ready(cluster, ns, "drift")
    deployment = get_json(cluster, "deployment/drift", "-n", ns)
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    within = RESYNC_SECONDS + 20  # one resync period, plus the reconcile and the watch delivering it

    def triton(live: dict[str, Any]) -> dict[str, Any]:
        return dict(live["spec"]["template"]["spec"]["containers"][0])

    cluster.kubectl("set", "image", "deployment/drift", "-n", ns, "triton=evil/image:1")
    _timed(
        "kubectl set image",
        lambda: triton(get_json(cluster, "deployment/drift", "-n", ns))["image"] == image,
        within,
    )

    cluster.kubectl("label", "--overwrite", "deployment/drift", "-n", ns, "app.kubernetes.io/instance=other")
    _timed(
        "kubectl label --overwrite",
        lambda: (
            get_json(cluster, "deployment/drift", "-n", ns)["metadata"]["labels"][
                "app.kubernetes.io/instance"
            ]
            == "drift"
        ),
        within,
    )

    for key, value in _editor(tmp_path, "probe", "s/periodSeconds: 5$/periodSeconds: 60/").items():
        monkeypatch.setenv(key, value)
    # The Deployment's watch event wakes the NimService: the revert may land before we could look.
    assert "edited" in cluster.kubectl("edit", "deployment/drift", "-n", ns).stdout
    _timed(
        "kubectl edit of the readiness probe",
        lambda: (
            triton(get_json(cluster, "deployment/drift", "-n", ns))["readinessProbe"]["periodSeconds"] == 5
        ),
        within,
    )

    for key, value in _editor(tmp_path, "port", "s/port: 8000$/port: 9000/").items():
        monkeypatch.setenv(key, value)
    assert "edited" in cluster.kubectl("edit", "service/drift", "-n", ns).stdout
    _timed(
        "kubectl edit of the Service's port",
        lambda: (
            sorted(p["port"] for p in get_json(cluster, "service/drift", "-n", ns)["spec"]["ports"])
            == [8000, 8001, 8002]
        ),
        within,
    )
    wait_ready(cluster, ns, "drift")
    assert "nimify_drift_corrections_total{" in e2e.operator.metrics()


def test_a_replica_count_the_hpa_writes_is_not_reverted(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    resources = {"gpus": 1, "gpuProduct": L4, "cpu": "1"}
    autoscaling = {"minReplicas": 1, "maxReplicas": 4, "targetCpuUtilization": 80}
    apply(cluster, ns, nimservice("hpa", models["mlp"], autoscaling=autoscaling, resources=resources))
    wait_ready(cluster, ns, "hpa")
    # The HPA writes the count through the scale subresource; without a metrics API here it never changes it
    # itself, so this write stands in for one of its own.
    cluster.kubectl("scale", "deployment/hpa", "-n", ns, "--replicas=3")
    time.sleep(RESYNC_SECONDS * 2 + 5)  # two resyncs: time for a wrong operator to undo it
    assert get_json(cluster, "deployment/hpa", "-n", ns)["spec"]["replicas"] == 3
    wait_ready(cluster, ns, "hpa")


# --- refusals -----------------------------------------------------------------------------------------------


def _admission_policy(name: str, namespace: str) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy that refuses Deployments running a Triton 25.11 image in `namespace`."""
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!object.spec.template.spec.containers"
                        ".exists(c, c.image.contains(':25.11'))",
                        "message": "Triton 25.11 is not approved in this namespace",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
    ]


@pytest.fixture
def admission_policy(e2e: E2E) -> Iterator[str]:
    name = f"no-triton-2511-{e2e.namespace}"
    e2e.cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(_admission_policy(name, e2e.namespace))
    )
    yield name
    e2e.cluster.kubectl(
        "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, "--ignore-not-found"
    )


def test_a_child_refused_by_admission_is_reported_and_recovers(e2e: E2E, admission_policy: str) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("guarded", models["mlp"]))
    wait_ready(cluster, ns, "guarded")
    refused = nimservice("guarded", models["mlp"], triton={"image": "nvcr.io/nvidia/tritonserver:25.11-py3"})

    def reported() -> tuple[str, str, str] | None:
        found = reason_of(cluster, ns, "guarded")
        return found if found[1] == "ChildRejected" else None

    # A new policy takes a moment to be enforced: re-apply until the refusal shows.
    def refused_now() -> tuple[str, str, str] | None:
        apply(cluster, ns, refused)
        return eventually(reported, timeout=RESYNC_SECONDS + 10) if reported() is None else reported()

    status, _, message = eventually(refused_now, timeout=90, interval=2)
    assert status == "False"
    assert "Deployment guarded was refused" in message and "Triton 25.11 is not approved" in message
    stalled = condition(cluster, ns, "guarded", "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    events = warning_events(cluster, ns, "guarded", "ChildRejected")
    assert events and "Triton 25.11 is not approved" in events[0]["message"]
    available = condition(cluster, ns, "guarded", "Available")
    assert available is not None and available["status"] == "True", "the old Deployment keeps serving"

    cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", admission_policy)
    started = time.monotonic()
    eventually(lambda: "25.11" in triton_image(cluster, ns, "guarded"), timeout=120)
    print(f"recovered {time.monotonic() - started:.1f} s after the policy was removed")
    wait_ready(cluster, ns, "guarded")


# --- Triton pods in trouble ---------------------------------------------------------------------------------


def test_unschedulable_triton_pods_report_insufficient_gpus(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("greedy", models["mlp"], resources={"gpus": 16, "gpuProduct": L4}))
    status, message = wait_reason(cluster, ns, "greedy", "InsufficientGpus", timeout=120)
    assert status == "False"
    assert "Insufficient nvidia.com/gpu" in message, message
    assert warning_events(cluster, ns, "greedy", "InsufficientGpus")


def _triton_pod(cluster: ExistingCluster, ns: str, name: str) -> dict[str, Any]:
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=inference-server"
    pods = get_json(cluster, "pods", "-n", ns, "-l", selector)
    return dict(pods["items"][0])


def _kubelet_reports(cluster: ExistingCluster, pod: dict[str, Any], container: dict[str, Any]) -> None:
    """Write the pod's status as a kubelet would (kwok leaves pods labelled custom alone)."""
    ready = "True" if container.get("ready") else "False"
    status = {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": ready},
            {"type": "ContainersReady", "status": ready},
            {"type": "PodScheduled", "status": "True"},
        ],
        "containerStatuses": [
            {"name": "triton", "image": pod["spec"]["containers"][0]["image"], "imageID": "", "ready": False}
            | container
        ],
    }
    cluster.kubectl(
        "patch",
        "pod",
        pod["metadata"]["name"],
        "-n",
        pod["metadata"]["namespace"],
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


CRASHED = {
    "exitCode": 1,
    "reason": "Error",
    "message": "error: creating server: Internal - failed to load all models",
}


@pytest.mark.parametrize(
    ("container", "reason", "words"),
    [
        pytest.param(
            {
                "restartCount": 4,
                "state": {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 1m20s restarting failed container=triton",
                    }
                },
                "lastState": {"terminated": CRASHED},
            },
            "CrashLoopBackOff",
            "failed to load all models",
            id="crash-loop",
        ),
        pytest.param(
            {
                "restartCount": 2,
                "state": {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 20s restarting failed container=triton",
                    }
                },
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
            },
            "OOMKilled",
            "more memory than its limit",
            id="oom-killed",
        ),
        pytest.param(
            {
                "restartCount": 0,
                "state": {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image "nvcr.io/nvidia/tritonserver:25.10-py3"',
                    }
                },
            },
            "ImagePullBackOff",
            "Back-off pulling image",
            id="image-pull",
        ),
    ],
)
def test_triton_pods_in_trouble_are_reported(
    e2e: E2E, container: dict[str, Any], reason: str, words: str
) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    name = f"sick-{reason.lower()}"
    apply(cluster, ns, nimservice(name, models["mlp"]))
    wait_ready(cluster, ns, name)
    pod = _triton_pod(cluster, ns, name)
    cluster.kubectl("label", "pod", pod["metadata"]["name"], "-n", ns, "=".join(KWOK_CUSTOM_STATUS_LABEL))
    _kubelet_reports(cluster, pod, container)
    status, message = wait_reason(cluster, ns, name, reason)
    assert status == "False" and words in message, message
    assert pod["metadata"]["name"] in message
    assert warning_events(cluster, ns, name, reason)

    # The kubelet restarts it and it serves again: the trouble leaves the status.
    running = {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
    _kubelet_reports(cluster, pod, {"restartCount": 5, "ready": True, "state": running})
    wait_ready(cluster, ns, name)
