"""`helm install` of the chart on the local cluster: what its ServiceAccount can and cannot do (asked of the
apiserver with `kubectl auth can-i`), that the operator does its whole job with exactly those rights in both
modes, the CRD upgrade path, and that upgrade and uninstall leave the NimServices alone.

The operator pod the chart creates lands on a kwok node here (simulated); the operator under test runs on
this machine with the release's ServiceAccount token instead.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nimify.controller.children import CHILD_KINDS
from nimify.install.rbac import operator_grants
from nimify.model.digest import file_sha256
from nimify.model.samples import build_mlp, write_model
from nimify.ports import free_ports
from nimify_devcluster.build_runner import BuildPodKubelet, create_local_claim
from nimify_devcluster.cluster import get_json, wait_established
from tests.install.argocd import argocd_health
from tests.install.helm import CHART, Helm
from tests.install.release import OperatorRun, Release, can_i, token_kubeconfig
from tests.kube import ExistingCluster, eventually, fresh_namespace

pytestmark = pytest.mark.cluster

TIMINGS: dict[str, float] = {}


def timed(what: str, action: Any, *args: Any) -> Any:
    started = time.monotonic()
    result = action(*args)
    TIMINGS[what] = round(time.monotonic() - started, 1)
    print(f"[chart] {what}: {TIMINGS[what]} s")
    return result


@pytest.fixture(scope="module")
def cluster_helm(cluster: ExistingCluster, helm: Helm) -> Helm:
    return Helm(helm.binary, cluster.kubeconfig)


@pytest.fixture(scope="module")
def release(cluster: ExistingCluster, cluster_helm: Helm) -> Iterator[Release]:
    """The chart installed cluster-wide, as a platform team would."""
    suffix = uuid.uuid4().hex[:6]
    installed = Release(f"nimify-{suffix}", f"nimify-system-{suffix}", cluster_helm)
    timed("install (cluster-wide)", installed.install)
    yield installed
    installed.helm("uninstall", installed.name, f"--namespace={installed.namespace}", check=False)
    cluster.kubectl("delete", "namespace", installed.namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def builds(cluster: ExistingCluster) -> Iterator[BuildPodKubelet]:
    with BuildPodKubelet(cluster) as runner:
        yield runner


def nimservice(name: str, uri: str, sha256: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri, "sha256": sha256},
            "engine": {"backend": "onnxruntime"},
            "resources": {"gpus": 1, "gpuProduct": "NVIDIA-L4"},
        }
        | spec,
    }


def apply(cluster: ExistingCluster, namespace: str, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(body))


def stored_model(cluster: ExistingCluster, namespace: str) -> tuple[str, str]:
    path = write_model(build_mlp(), create_local_claim(cluster, namespace, "models") / "mlp.onnx")
    return "pvc://models/mlp.onnx", file_sha256(path)


# --- the chart's objects


def test_install_creates_the_crd_and_runs_the_operator_with_its_service_account(
    cluster: ExistingCluster, release: Release
) -> None:
    crd = get_json(cluster, "crd", "nimservices.nimify.dev")
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    deployment = get_json(cluster, f"deployment/{release.service_account}", "-n", release.namespace)
    assert deployment["status"]["availableReplicas"] == 1
    (pod,) = get_json(cluster, "pods", "-n", release.namespace, "-l", "app.kubernetes.io/component=operator")[
        "items"
    ]
    assert pod["spec"]["serviceAccountName"] == release.service_account
    assert pod["spec"]["containers"][0]["image"].startswith("ghcr.io/nimify/nimify:")


# --- can-i: the apiserver's answer for the release's ServiceAccount

#: (verb, resource) the operator may do in every namespace in cluster-wide mode.
ALLOWED = [
    ("list", "nimservices.nimify.dev"),
    ("watch", "nimservices.nimify.dev"),
    ("patch", "nimservices.nimify.dev/status"),
    ("create", "events"),
    ("list", "pods"),
    ("watch", "pods"),
    ("create", "jobs.batch"),
    ("list", "jobs.batch"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("delete", "deployments.apps"),  # a serving unit that goes away takes its Deployment with it
    ("delete", "configmaps"),
    ("create", "services"),
    ("patch", "services"),
    ("delete", "services"),  # a rollout's candidate's Service goes with the candidate
    ("create", "configmaps"),
    ("patch", "persistentvolumeclaims"),
    ("create", "horizontalpodautoscalers.autoscaling"),
    ("patch", "poddisruptionbudgets.policy"),
    ("get", "secrets"),  # by name: a model image's pull secrets (spec.imagePullSecrets)
]
#: What it must never be able to do.
DENIED = [
    ("patch", "nimservices.nimify.dev"),  # kopf writes nothing on them: only their status is the operator's
    ("list", "secrets"),
    ("watch", "secrets"),
    ("get", "nodes"),
    ("patch", "nodes"),
    ("update", "nodes"),
    ("delete", "nodes"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("get", "pods/log"),
    ("create", "pods/portforward"),
    ("create", "serviceaccounts/token"),
    ("create", "serviceaccounts"),
    ("delete", "nimservices.nimify.dev"),
    ("update", "jobs.batch"),
    ("patch", "jobs.batch"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("impersonate", "users"),
    ("impersonate", "serviceaccounts"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"),
    ("create", "daemonsets.apps"),
    ("create", "statefulsets.apps"),
    ("create", "cronjobs.batch"),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
]


def test_can_i_cluster_wide(cluster: ExistingCluster, release: Release) -> None:
    matrix = {}
    for verb, resource in ALLOWED:
        matrix[(verb, resource)] = can_i(cluster, release.user, verb, resource, "--all-namespaces")
    for verb, resource in DENIED:
        matrix[(verb, resource)] = can_i(cluster, release.user, verb, resource, "--all-namespaces")
        # ... and not in the operator's own namespace or kube-system either.
        for namespace in (release.namespace, "kube-system"):
            assert not can_i(cluster, release.user, verb, resource, f"--namespace={namespace}"), (
                verb,
                resource,
                namespace,
            )
    assert can_i(cluster, release.user, "list", "customresourcedefinitions.apiextensions.k8s.io")
    print("[chart] can-i cluster-wide:", json.dumps({f"{v} {r}": yes for (v, r), yes in matrix.items()}))
    assert [key for key in ALLOWED if not matrix[key]] == []
    assert [key for key in DENIED if matrix[key]] == []


def test_users_who_edit_a_namespace_may_manage_its_nimservices(
    cluster: ExistingCluster, release: Release
) -> None:
    with fresh_namespace(cluster, "users") as namespace:
        cluster.kubectl("create", "rolebinding", "dev", "--clusterrole=edit", "--user=dev", f"-n={namespace}")
        cluster.kubectl(
            "create", "rolebinding", "auditor", "--clusterrole=view", "--user=auditor", f"-n={namespace}"
        )
        # The aggregation controller fills the default roles asynchronously.
        eventually(lambda: can_i(cluster, "dev", "create", "nimservices.nimify.dev", f"-n={namespace}"))
        assert can_i(cluster, "dev", "patch", "nimservices.nimify.dev/scale", f"-n={namespace}")
        eventually(lambda: can_i(cluster, "auditor", "list", "nimservices.nimify.dev", f"-n={namespace}"))
        assert not can_i(cluster, "auditor", "create", "nimservices.nimify.dev", f"-n={namespace}")
        assert not can_i(cluster, "dev", "create", "nimservices.nimify.dev", "-n=kube-system")


# --- the operator does its whole job with exactly these rights


def test_operator_with_the_chart_rbac_serves_a_nimservice(
    cluster: ExistingCluster, release: Release, builds: BuildPodKubelet, tmp_path: Path
) -> None:
    kubeconfig = token_kubeconfig(cluster, release, tmp_path / "operator.kubeconfig")
    with fresh_namespace(cluster, "chart") as namespace:
        uri, sha256 = stored_model(cluster, namespace)
        # Before the operator runs: what Argo CD sees of a NimService nobody has reconciled yet.
        apply(cluster, namespace, nimservice("mlp", uri, sha256))
        assert argocd_health(get_json(cluster, "nimservice/mlp", "-n", namespace))[0] == "Progressing"
        with OperatorRun(kubeconfig, tmp_path / "operator.log") as operator:
            apply(
                cluster,
                namespace,
                nimservice(
                    "mlp",
                    uri,
                    sha256,
                    autoscaling={"minReplicas": 1, "maxReplicas": 2, "targetCpuUtilization": 80},
                    resources={"gpus": 1, "gpuProduct": "NVIDIA-L4", "cpu": "1"},
                ),
            )
            cluster.kubectl(
                "wait",
                "-n",
                namespace,
                "--for=condition=Ready",
                "nimservice/mlp",
                "--timeout=180s",
                timeout=200,
            )
            ready = get_json(cluster, "nimservice/mlp", "-n", namespace)
            owned = _children(cluster, namespace)
            # Autoscaling off and an Ingress on: the HPA and PDB are pruned (delete), the Ingress applied.
            apply(
                cluster,
                namespace,
                nimservice("mlp", uri, sha256, expose={"ingress": {"host": "mlp.example.com"}}),
            )
            eventually(
                lambda: cluster.kubectl("get", "ingress/mlp", "-n", namespace, check=False).returncode == 0
            )
            eventually(lambda: not get_json(cluster, "hpa,pdb", "-n", namespace)["items"], timeout=90)
            # A child edited behind the operator's back is put back (drift), with the same rights.
            cluster.kubectl(
                "label", "service/mlp", "-n", namespace, "--overwrite", "app.kubernetes.io/component=edited"
            )
            eventually(
                lambda: (
                    get_json(cluster, "service/mlp", "-n", namespace)["metadata"]["labels"][
                        "app.kubernetes.io/component"
                    ]
                    != "edited"
                ),
                timeout=90,
            )
            # A spec the apiserver accepts but no GPU can run: Stalled, which Argo CD must show as Degraded.
            apply(
                cluster,
                namespace,
                nimservice(
                    "t4", uri, sha256, engine={"precision": "bf16"}, resources={"gpuProduct": "Tesla-T4"}
                ),
            )
            apply(cluster, namespace, nimservice("held", uri, sha256, paused=True))
            stalled = eventually(
                lambda: (
                    (body := get_json(cluster, "nimservice/t4", "-n", namespace))
                    and any(
                        c["type"] == "Stalled" and c["status"] == "True" for c in body["status"]["conditions"]
                    )
                    and body
                )
            )
            paused = eventually(
                lambda: (
                    (body := get_json(cluster, "nimservice/held", "-n", namespace))
                    and any(c["reason"] == "Paused" for c in (body.get("status") or {}).get("conditions", []))
                    and body
                )
            )
            kinds = {
                obj["kind"]
                for obj in get_json(
                    cluster, "deployments,services,configmaps,hpa,pdb,pvc,jobs,ingress", "-n", namespace
                )["items"]
                if obj["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "nimify-operator"
            }
            problems = operator.permission_problems()
        assert {kind for kind, _ in owned} == {
            "Deployment",
            "Service",
            "ConfigMap",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "PersistentVolumeClaim",
            "Job",
        }
        assert "Ingress" in kinds and "HorizontalPodAutoscaler" not in kinds
        assert problems == [], "the operator hit a permission it lacks:\n" + "\n".join(problems)
        assert operator.returncode == 0, "SIGTERM stops the operator cleanly (graceful shutdown)"
        assert argocd_health(ready) == ("Healthy", "Serving: 1 replica(s) serving")
        health, message = argocd_health(stalled)
        assert (
            health == "Degraded"
            and message.startswith("InvalidSpec: ")
            and "spec.engine.precision" in message
        )
        assert argocd_health(paused)[0] == "Suspended"
    assert _forbidden_writes(cluster, release.user) == []


def _forbidden_writes(cluster: ExistingCluster, user: str) -> list[str]:
    if cluster.audit_log is None:
        return []
    denied = []
    for line in cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        if (
            event.get("user", {}).get("username") == user
            and event.get("responseStatus", {}).get("code") == 403
        ):
            denied.append(f"{event['verb']} {event.get('requestURI')}")
    return denied


# --- namespaced mode: Roles in the watched namespaces, nothing cluster-wide


def test_namespaced_mode(
    cluster: ExistingCluster, cluster_helm: Helm, builds: BuildPodKubelet, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    scoped = Release(f"scoped-{suffix}", f"nimify-scoped-{suffix}", cluster_helm)
    with fresh_namespace(cluster, "team") as watched, fresh_namespace(cluster, "other") as other:
        timed("install (namespaced)", scoped.install, f"--set=watchNamespaces={{{watched}}}")
        try:
            assert can_i(cluster, scoped.user, "create", "deployments.apps", f"-n={watched}")
            assert can_i(cluster, scoped.user, "watch", "nimservices.nimify.dev", f"-n={watched}")
            for verb, resource in (
                ("create", "deployments.apps"),
                ("list", "pods"),
                ("watch", "nimservices.nimify.dev"),
            ):
                assert not can_i(cluster, scoped.user, verb, resource, f"-n={other}"), (verb, resource)
                assert not can_i(cluster, scoped.user, verb, resource, "--all-namespaces"), (verb, resource)
            assert not can_i(cluster, scoped.user, "list", "customresourcedefinitions.apiextensions.k8s.io")
            assert not can_i(cluster, scoped.user, "list", "namespaces")

            kubeconfig = token_kubeconfig(cluster, scoped, tmp_path / "scoped.kubeconfig")
            uri, sha256 = stored_model(cluster, watched)
            health = free_ports(1)[0]
            liveness = f"--liveness=http://127.0.0.1:{health}/healthz"  # what the chart's probes hit
            with OperatorRun(
                kubeconfig, tmp_path / "scoped.log", ("--namespace", watched, liveness)
            ) as operator:
                assert httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=5).status_code == 200
                apply(cluster, watched, nimservice("mlp", uri, sha256))
                apply(cluster, other, nimservice("ignored", "s3://models/mlp.onnx", sha256))
                cluster.kubectl(
                    "wait",
                    "-n",
                    watched,
                    "--for=condition=Ready",
                    "nimservice/mlp",
                    "--timeout=180s",
                    timeout=200,
                )
                problems = operator.permission_problems()
            assert problems == [], "\n".join(problems)
            assert "status" not in get_json(cluster, "nimservice/ignored", "-n", other)
        finally:
            scoped.helm("uninstall", scoped.name, f"--namespace={scoped.namespace}", check=False)
            cluster.kubectl("delete", "namespace", scoped.namespace, "--wait=false", check=False)


# --- lifecycle: CRD upgrade path, upgrade and uninstall leave the NimServices serving


def test_crd_upgrade_path(cluster: ExistingCluster, cluster_helm: Helm, release: Release) -> None:
    crds = cluster_helm("show", "crds", str(CHART)).stdout
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds)
    wait_established(cluster, "nimservices.nimify.dev")


def test_upgrade_with_changed_values_rolls_the_operator_and_keeps_the_nimservices(
    cluster: ExistingCluster, release: Release
) -> None:
    with fresh_namespace(cluster, "keep") as namespace:
        apply(cluster, namespace, nimservice("kept", "s3://models/mlp.onnx", "ab" * 32))
        before = get_json(cluster, "nimservice/kept", "-n", namespace)["metadata"]
        selector = "app.kubernetes.io/component=operator"
        (old_pod,) = get_json(cluster, "pods", "-n", release.namespace, "-l", selector)["items"]
        timed(
            "upgrade (changed values)",
            release.upgrade,
            "--reuse-values",
            "--set=verbose=true",
            "--set=settings.resyncSeconds=30",
        )
        deployment = get_json(cluster, f"deployment/{release.service_account}", "-n", release.namespace)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "--verbose" in container["args"]
        assert {"name": "NIMIFY_RESYNC_SECONDS", "value": "30"} in container["env"]
        pods = eventually(
            lambda: [
                pod
                for pod in get_json(cluster, "pods", "-n", release.namespace, "-l", selector)["items"]
                if pod["metadata"]["uid"] != old_pod["metadata"]["uid"]
            ]
        )
        assert len(pods) == 1
        after = get_json(cluster, "nimservice/kept", "-n", namespace)["metadata"]
        assert after["uid"] == before["uid"] and after["resourceVersion"] == before["resourceVersion"]


def test_uninstall_removes_the_operator_and_leaves_crd_nimservices_and_children_serving(
    cluster: ExistingCluster, cluster_helm: Helm, builds: BuildPodKubelet, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    doomed = Release(f"gone-{suffix}", f"nimify-gone-{suffix}", cluster_helm)
    installed = doomed.install()
    assert "helm show crds" in installed.stdout, "NOTES.txt gives the CRD upgrade path"
    kubeconfig = token_kubeconfig(cluster, doomed, tmp_path / "doomed.kubeconfig")
    with fresh_namespace(cluster, "stays") as namespace:
        uri, sha256 = stored_model(cluster, namespace)
        with OperatorRun(kubeconfig, tmp_path / "doomed.log"):
            apply(cluster, namespace, nimservice("stays", uri, sha256))
            cluster.kubectl(
                "wait",
                "-n",
                namespace,
                "--for=condition=Ready",
                "nimservice/stays",
                "--timeout=180s",
                timeout=200,
            )
        children = _children(cluster, namespace)
        timed("uninstall", doomed.uninstall)
        left = get_json(
            cluster,
            "deployments,serviceaccounts,services",
            "-n",
            doomed.namespace,
            "-l",
            f"app.kubernetes.io/instance={doomed.name}",
        )["items"]
        assert left == []
        assert cluster.kubectl("get", f"clusterrole/{doomed.service_account}", check=False).returncode != 0
        assert get_json(cluster, "crd", "nimservices.nimify.dev")
        nim = get_json(cluster, "nimservice/stays", "-n", namespace)
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in nim["status"]["conditions"])
        assert _children(cluster, namespace) == children, "the served model keeps running, unmanaged"
        assert get_json(cluster, "deployment/stays", "-n", namespace)["status"]["readyReplicas"] == 1
    cluster.kubectl("delete", "namespace", doomed.namespace, "--wait=false", check=False)


def _children(cluster: ExistingCluster, namespace: str) -> dict[tuple[str, str], str]:
    """(kind, name) -> uid of everything the operator created in `namespace`."""
    items = get_json(
        cluster,
        "deployments,services,configmaps,pvc,jobs,hpa,pdb",
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/managed-by=nimify-operator",
    )["items"]
    return {(item["kind"], item["metadata"]["name"]): item["metadata"]["uid"] for item in items}


def test_cluster_scoped_grants_are_what_the_apiserver_serves_cluster_scoped(cluster: ExistingCluster) -> None:
    def served(namespaced: bool) -> set[tuple[str, str]]:
        names = cluster.kubectl(
            "api-resources", f"--namespaced={str(namespaced).lower()}", "-o", "name"
        ).stdout
        return {(group, plural) for plural, _, group in (name.partition(".") for name in names.split())}

    cluster_scoped, namespaced = served(False), served(True)
    for grant in operator_grants():
        key = (grant.group, grant.resource.split("/")[0])
        if grant.cluster_scoped:
            assert key in cluster_scoped, key
        elif key not in namespaced:
            # Only an optional API (Gateway API, KEDA) may be missing from a cluster.
            optional = {child.group for child in CHILD_KINDS if child.optional}
            assert grant.group in optional, f"{key} is not served at all"
