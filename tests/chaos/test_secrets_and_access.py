"""Secrets and access, end to end: the operator and its conversion Jobs run for real (pods of kwok nodes, the
conversion itself on this machine) in namespaces that enforce PodSecurity `restricted`.

- Credentials (a presigned query string, credentialsSecret keys for s3:// and hf://, the Hub CDN's presigned
  redirect) never appear in the operator's log, the Jobs' logs, events, status, Job args or termination
  messages, on success or failure.
- A model URI cannot reach another namespace's claim, a host path, or a file a claim links to outside itself.
- Every pod the operator creates is admitted by PodSecurity `restricted`; so is every rendered variant.
- A model URI (or a redirect) into a metadata range is refused in the Job, and the NimService says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimify.api import NimService
from nimify.model.digest import file_sha256
from nimify.model.samples import write_sample
from nimify.settings import OperatorSettings
from nimify_devcluster.build_runner import BuildPodKubelet, create_local_claim
from nimify_devcluster.cluster import get_json
from nimify_devcluster.pki import create_pki
from tests.chaos.children import desired_children, sample_model
from tests.chaos.conftest import RESTRICTED, restricted_namespace
from tests.chaos.report import ChaosReport, Figure
from tests.controller.conftest import OperatorProcess
from tests.kube import ExistingCluster, eventually, fresh_namespace
from tests.stores import (
    CDN_SIGNATURE,
    FakeHub,
    HubRepo,
    PresignedStore,
    S3Server,
    running_hub,
    running_presigned_store,
    running_s3,
)

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.timeout(600)]

L4 = "NVIDIA-L4"
SIGNATURE = "presigned-signature-7f3a9c41"
PRESIGNED_CREDENTIAL = "AKIAPRESIGNEDCHAOS"
S3_KEY_ID = "AKIACHAOSSECRETS"
S3_SECRET = "s3-secret-access-key-5e1d77"
HF_TOKEN = "hf_secret_token_c0ffee42"
WRONG_HF_TOKEN = "hf_wrong_token_deadbeef"
SECRETS = (SIGNATURE, PRESIGNED_CREDENTIAL, S3_SECRET, HF_TOKEN, WRONG_HF_TOKEN, CDN_SIGNATURE.split("=")[1])


def nimservice(name: str, uri: str, **model: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri, **model},
            "engine": {"backend": "onnxruntime"},
            "resources": {"gpus": 1, "gpuProduct": L4},
        },
    }


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def apply(cluster: ExistingCluster, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=chaos", "-n", namespace, "-f", "-",
        input=yaml.safe_dump_all(objects),
    )  # fmt: skip


def conditions(cluster: ExistingCluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    status = get_json(cluster, f"nimservice/{name}", "-n", namespace).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def settled(cluster: ExistingCluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The Ready condition once the NimService is Ready or Stalled (a dead end), else None."""
    found = conditions(cluster, namespace, name)
    ready, stalled = found.get("Ready", {}), found.get("Stalled", {})
    return ready if ready.get("status") == "True" or stalled.get("status") == "True" else None


def wait_settled(cluster: ExistingCluster, namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    return dict(eventually(lambda: settled(cluster, namespace, name), timeout=timeout, interval=1))


# --- the stores the models live in --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_sample("mlp", root / "models")
    return root


@pytest.fixture(scope="module")
def presigned(model_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PresignedStore]:
    pki = create_pki(tmp_path_factory.mktemp("pki"), "10.96.0.1")
    store = PresignedStore(model_files, SIGNATURE, pki.ca_cert)
    yield from running_presigned_store(store, pki.serving_cert, pki.serving_key)


@pytest.fixture(scope="module")
def s3(model_files: Path) -> Iterator[S3Server]:
    for server in running_s3():
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="chaos-secrets")
        client.put_object(
            Bucket="chaos-secrets", Key="v1/mlp.onnx", Body=(model_files / "models" / "mlp.onnx").read_bytes()
        )
        yield server


@pytest.fixture(scope="module")
def hub(model_files: Path) -> Iterator[FakeHub]:
    content = (model_files / "models" / "mlp.onnx").read_bytes()
    files = {"onnx/mlp.onnx": content, "onnx/other.onnx": content}
    repo = HubRepo(files, lfs={"onnx/mlp.onnx"}, token=HF_TOKEN)
    yield from running_hub(FakeHub({"acme/private": repo}))


# --- credentials --------------------------------------------------------------------------------------------


def presigned_uri(store: PresignedStore, path: str) -> str:
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={PRESIGNED_CREDENTIAL}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Expires=3600&X-Amz-Signature={SIGNATURE}"
    )
    return f"{store.url}{path}?{query}"


def what_may_not_hold_secrets(
    cluster: ExistingCluster, namespace: str, operator: OperatorProcess, runner: BuildPodKubelet
) -> dict[str, str]:
    """Everything a user, a log collector or `kubectl describe` sees besides the spec the user wrote."""
    texts = {"operator log": operator.log.read_text(errors="replace")}
    for uid, outcome in runner.handled.items():
        texts[f"conversion pod {uid} log"] = str(outcome.get("stderr", "")) + str(outcome.get("error", ""))
        texts[f"conversion pod {uid} termination message"] = str(outcome.get("message", ""))
    texts["events"] = json.dumps(get_json(cluster, "events", "-n", namespace)["items"])
    for nim in get_json(cluster, "nimservices", "-n", namespace)["items"]:
        texts[f"nimservice {nim['metadata']['name']} status"] = json.dumps(nim.get("status"))
    for job in get_json(cluster, "jobs", "-n", namespace)["items"]:
        container = job["spec"]["template"]["spec"]["containers"][0]
        texts[f"job {job['metadata']['name']} command and args"] = json.dumps(
            [container.get("command"), container.get("args")]
        )
        # The spec travels as NIMIFY_SPEC (as the NimService holds it); nothing else in the Job may carry
        # a credential, and the secret's values are never copied in.
        others = [e for e in container.get("env", []) if e["name"] != "NIMIFY_SPEC"]
        texts[f"job {job['metadata']['name']} metadata, env, envFrom"] = json.dumps(
            [job["metadata"], others, container.get("envFrom")]
        )
    for pod in get_json(cluster, "pods", "-n", namespace)["items"]:
        texts[f"pod {pod['metadata']['name']} status"] = json.dumps(pod.get("status"))
    for kind in ("deployments", "services", "configmaps", "persistentvolumeclaims"):
        for item in get_json(cluster, kind, "-n", namespace)["items"]:
            texts[f"{kind} {item['metadata']['name']}"] = json.dumps(item)
    return texts


def test_credentials_never_appear(
    cluster: ExistingCluster,
    chaos_operator: OperatorProcess,
    build_pods: BuildPodKubelet,
    presigned: PresignedStore,
    s3: S3Server,
    hub: FakeHub,
    model_files: Path,
    chaos_report: ChaosReport,
) -> None:
    started = time.monotonic()
    digest = file_sha256(model_files / "models" / "mlp.onnx")
    # A presigned URL whose store redirects to the metadata service, with the signature in the Location too.
    presigned.redirects["/models/moved.onnx"] = (
        f"http://169.254.169.254/latest/meta-data/iam/security-credentials/?X-Amz-Signature={SIGNATURE}"
    )
    s3.faults.statuses["v1/refused.onnx"] = [403] * 4
    with restricted_namespace(cluster) as ns:
        apply(
            cluster,
            ns,
            secret("trust", {"SSL_CERT_FILE": str(presigned.ca_file)}),
            secret(
                "s3-creds",
                {
                    "AWS_ACCESS_KEY_ID": S3_KEY_ID,
                    "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                    "AWS_ENDPOINT_URL": s3.endpoint,
                    "AWS_REGION": "us-east-1",
                },
            ),
            secret("hf-creds", {"HF_TOKEN": HF_TOKEN, "HF_ENDPOINT": hub.endpoint}),
            secret("hf-wrong", {"HF_TOKEN": WRONG_HF_TOKEN, "HF_ENDPOINT": hub.endpoint}),
        )
        services = {
            "presigned": nimservice(
                "presigned",
                presigned_uri(presigned, "/models/mlp.onnx"),
                sha256=digest,
                credentialsSecret="trust",
            ),
            "presigned-redirect": nimservice(
                "presigned-redirect",
                presigned_uri(presigned, "/models/moved.onnx"),
                credentialsSecret="trust",
            ),
            "s3": nimservice("s3", "s3://chaos-secrets/v1/mlp.onnx", credentialsSecret="s3-creds"),
            "s3-refused": nimservice(
                "s3-refused", "s3://chaos-secrets/v1/refused.onnx", credentialsSecret="s3-creds"
            ),
            "hf": nimservice("hf", "hf://acme/private/onnx/mlp.onnx", credentialsSecret="hf-creds"),
            "hf-refused": nimservice(
                # Another file: one whose engine was built already is served from the namespace's cache.
                "hf-refused",
                "hf://acme/private/onnx/other.onnx",
                credentialsSecret="hf-wrong",
            ),
        }
        apply(cluster, ns, *services.values())
        outcome = {name: wait_settled(cluster, ns, name) for name in services}
        reasons = {name: (ready["status"], ready["reason"]) for name, ready in outcome.items()}
        assert reasons == {
            "presigned": ("True", "Serving"),
            "presigned-redirect": ("False", "ModelFetchFailed"),
            "s3": ("True", "Serving"),
            "s3-refused": ("False", "ModelFetchFailed"),
            "hf": ("True", "Serving"),
            "hf-refused": ("False", "ModelNotFound"),
        }, outcome
        # The refusal names what was refused, without the credential that came along.
        assert (
            "169.254.169.254 is in the denied range 169.254.0.0/16"
            in outcome["presigned-redirect"]["message"]
        )
        assert "access denied" in outcome["s3-refused"]["message"]

        texts = what_may_not_hold_secrets(cluster, ns, chaos_operator, build_pods)
        hits = [(where, secret) for where, text in texts.items() for secret in SECRETS if secret in text]
        assert hits == []
        # Not for want of occasions: the specs hold them, and the operator's log redacted what it logged.
        assert SIGNATURE in json.dumps(get_json(cluster, "nimservice/presigned", "-n", ns)["spec"])
        assert "?<redacted>" in texts["operator log"]
        # The credentials secrets reach the Job by name only, never by value; the spec carries none.
        for job in get_json(cluster, "jobs", "-n", ns)["items"]:
            container = job["spec"]["template"]["spec"]["containers"][0]
            spec_env = next(e["value"] for e in container["env"] if e["name"] == "NIMIFY_SPEC")
            assert not [s for s in (S3_SECRET, HF_TOKEN, WRONG_HF_TOKEN) if s in spec_env]
            assert [list(source) for source in container["envFrom"]] == [["secretRef"]]
        # Every pod the operator made was admitted by PodSecurity `restricted`.
        assert_admitted(cluster, ns)
    chaos_report.add(
        Figure(
            f"credentials in URIs and secrets ({len(SECRETS)} secrets, {len(texts)} places grepped)",
            len(services),
            len(services),
            "no secret shown anywhere; 3 served, 3 refused with a named reason",
            time.monotonic() - started,
        )
    )


def assert_admitted(cluster: ExistingCluster, namespace: str) -> None:
    """The namespace enforces `restricted` and no pod creation was refused; Jobs and Deployments have pods."""
    labels = get_json(cluster, "namespace", namespace)["metadata"]["labels"]
    assert {k: labels.get(k) for k in RESTRICTED} == RESTRICTED
    events = get_json(cluster, "events", "-n", namespace)["items"]
    refused = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert refused == []
    pods = get_json(cluster, "pods", "-n", namespace)["items"]
    owners = {ref["kind"] for pod in pods for ref in pod["metadata"].get("ownerReferences") or []}
    assert {"Job", "ReplicaSet"} <= owners


# --- claims and host paths ----------------------------------------------------------------------------------

HOST_PATH_URIS = (
    "file:///etc/passwd",
    "/etc/shadow",
    "hostpath:///var/lib/kubelet/m.onnx",
    "pvc://models/../../../etc/passwd.onnx",
    "pvc://models/%2e%2e/%2E%2E/etc/m.onnx",
    "pvc://../models/m.onnx",
    "pvc://Models_Of/Another/m.onnx",
    "pvc:///m.onnx",
)


def test_no_other_namespaces_claim_and_no_host_path(
    cluster: ExistingCluster,
    chaos_operator: OperatorProcess,
    build_pods: BuildPodKubelet,
    tmp_path: Path,
    chaos_report: ChaosReport,
) -> None:
    started = time.monotonic()
    outside = tmp_path / "outside"
    write_sample("mlp", outside, external_data=True)  # a valid model: refused for where it is, not what
    with fresh_namespace(cluster, "e2e-chaos-other") as other, restricted_namespace(cluster) as ns:
        write_sample("mlp", create_local_claim(cluster, other, "models"))
        own = create_local_claim(cluster, ns, "own")
        (own / "link.onnx").symlink_to(outside / "mlp.onnx")
        write_sample("mlp", own / "weights-out", external_data=True)
        (own / "weights-out" / "mlp.weights").unlink()
        (own / "weights-out" / "mlp.weights").symlink_to(outside / "mlp.weights")

        refused = {}
        for uri in HOST_PATH_URIS:
            result = cluster.kubectl(
                "apply", "-n", ns, "-f", "-", check=False, input=yaml.safe_dump(nimservice("hostile", uri))
            )
            refused[uri] = result.returncode != 0 and "spec.model" in result.stderr
        assert refused == dict.fromkeys(HOST_PATH_URIS, True)

        apply(
            cluster,
            ns,
            nimservice("borrow", "pvc://models/mlp.onnx"),
            nimservice("link", "pvc://own/link.onnx"),
            nimservice("weights", "pvc://own/weights-out/mlp.onnx"),
        )
        link = wait_settled(cluster, ns, "link")
        assert link["reason"] == "InvalidModelUri" and "resolves outside the claim's mount" in link["message"]
        weights = wait_settled(cluster, ns, "weights")
        assert weights["reason"] == "ExternalDataPathEscapes" and "symlink" in weights["message"]

        # pvc://models names a claim of this namespace (a pod can mount no other): there is none, so the
        # conversion pod never runs and the other namespace's claim is never touched.
        job = eventually(
            lambda: next(
                (j for j in get_json(cluster, "jobs", "-n", ns)["items"] if owner(j) == "borrow"), None
            )
        )
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in job["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert "models" in claims
        assert not [v for v in job["spec"]["template"]["spec"]["volumes"] if "hostPath" in v]
        pod = eventually(lambda: job_pods(cluster, ns, job["metadata"]["name"]))[0]
        scheduled = eventually(lambda: pod_condition(cluster, ns, pod, "PodScheduled"), timeout=60)
        assert (
            scheduled["status"] == "False"
            and 'persistentvolumeclaim "models" not found' in scheduled["message"]
        )
        assert pod["metadata"]["uid"] not in build_pods.handled
        assert_no_host_paths(cluster, ns)
    chaos_report.add(
        Figure(
            "URIs at other claims, host paths, links out of a claim",
            len(HOST_PATH_URIS) + 3,
            len(HOST_PATH_URIS) + 3,
            f"{len(HOST_PATH_URIS)} refused at admission, 2 refused in the Job, 1 never scheduled",
            time.monotonic() - started,
        )
    )


def owner(job: dict[str, Any]) -> str:
    return next(
        (r["name"] for r in job["metadata"].get("ownerReferences") or [] if r["kind"] == "NimService"), ""
    )


def job_pods(cluster: ExistingCluster, namespace: str, job: str) -> list[dict[str, Any]]:
    return list(
        get_json(cluster, "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job}")["items"]
    )


def pod_condition(cluster: ExistingCluster, namespace: str, pod: dict[str, Any], kind: str) -> Any:
    live = get_json(cluster, "pod", pod["metadata"]["name"], "-n", namespace)
    return next((c for c in live["status"].get("conditions") or [] if c["type"] == kind), None)


def assert_no_host_paths(cluster: ExistingCluster, namespace: str) -> None:
    for kind in ("pods", "jobs", "deployments"):
        assert "hostPath" not in json.dumps(get_json(cluster, kind, "-n", namespace)["items"])


# --- PodSecurity `restricted` for every rendered variant ----------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "tensorrt": {"engine": {"backend": "tensorrt"}},
    "onnxruntime-cpu": {"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 0, "gpuProduct": None}},
    "prebuilt-plan": {"model": {"uri": "https://models.example/m.plan"}},
    "claims-and-placement": {
        "model": {"uri": "pvc://models/m.onnx"},
        "storage": {"size": "10Gi"},
        "placement": {
            "runtimeClassName": "nimify-chaos-nvidia",
            "priorityClassName": "nimify-chaos-inference",
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"pool": "gpu"},
        },
        "resources": {"cpu": "2", "memory": "8Gi"},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetCpuUtilization": 70},
    },
}


def pod_from_template(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": template["spec"]}


SCHEDULING_CLASSES = (
    {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "nimify-chaos-inference"},
        "value": 1000,
    },
    {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "nimify-chaos-nvidia"},
        "handler": "nvidia",
    },
)


def test_every_rendered_pod_is_admitted_by_restricted(cluster: ExistingCluster) -> None:
    settings = OperatorSettings()
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(SCHEDULING_CLASSES))
    with restricted_namespace(cluster) as ns:
        verdicts = {}
        for variant, spec in VARIANTS.items():
            base: dict[str, Any] = {
                "model": {"uri": "https://models.example/m.onnx"},
                "resources": {"gpus": 1, "gpuProduct": L4},
            }
            for key, value in spec.items():
                merged = base.get(key, {}) | value
                base[key] = {k: v for k, v in merged.items() if v is not None}
            nim = NimService.model_validate(
                {"metadata": {"name": variant, "namespace": ns, "uid": "u-" + variant}, "spec": base}
            )
            children = desired_children(nim, settings) + desired_children(nim, settings, sample_model())
            templates = {
                child["kind"].lower(): child["spec"]["template"]
                for child in children
                if child["kind"] in ("Job", "Deployment")
            }
            assert set(templates) == {"job", "deployment"}
            for kind, template in templates.items():
                pod = pod_from_template(f"{variant}-{kind}", template)
                # Created for real: PodSecurity admits or refuses pods (workloads only get warnings).
                result = cluster.kubectl("create", "-n", ns, "-f", "-", check=False, input=json.dumps(pod))
                verdicts[f"{variant} {kind}"] = (result.returncode, result.stderr.strip())
        assert verdicts == {key: (0, "") for key in verdicts}
        # The admission is live: the same pod with a root container is refused.
        pod = pod_from_template("as-root", templates["job"])
        pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
        pod["spec"].pop("securityContext", None)
        result = cluster.kubectl("create", "-n", ns, "-f", "-", check=False, input=json.dumps(pod))
        assert result.returncode != 0 and 'violates PodSecurity "restricted:latest"' in result.stderr
