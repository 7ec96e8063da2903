"""Whether every NimService of a namespace has converged to its spec, and what the operator left behind: the
checks the fault tests end with (operator kills, control-plane faults).

Converged means, for each NimService: its status describes its current generation (`observedGeneration`), it
is Ready and Serving, its Deployment runs the replicas the spec asks for with the engine of the spec's model
and a Triton config of the spec's batching. Nothing else may be there: every managed child is controlled by a
NimService that exists (the namespace's shared engine claim aside), and no conversion Job was ever created
twice while it existed (read from the apiserver's audit log: a second create that succeeded would be a
duplicate build).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from nimify.api import NimService
from nimify.engine.location import engine_location
from nimify.render.identity import ENGINE_KEY_ANNOTATION, MANAGED_BY_SELECTOR, triton_config_name
from nimify.settings import OperatorSettings
from nimify_devcluster.cluster import Kubectl, get_json
from tests.kube import ExistingCluster, eventually, fresh_namespace

MANAGED = ",".join(f"{key}={value}" for key, value in MANAGED_BY_SELECTOR.items())
CHILD_KINDS = "deployments,services,configmaps,jobs,poddisruptionbudgets,horizontalpodautoscalers,pvc"


def _condition(nim: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (nim.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def not_converged(
    cluster: Kubectl, namespace: str, expected: dict[str, dict[str, Any]], settings: OperatorSettings
) -> list[str]:
    """What still differs from `expected` (NimService name -> the spec last applied), one line each; empty
    once everything has converged."""
    nims = {n["metadata"]["name"]: n for n in get_json(cluster, "nimservices", "-n", namespace)["items"]}
    children = get_json(cluster, CHILD_KINDS, "-n", namespace, "-l", MANAGED)["items"]
    by_kind: dict[tuple[str, str], dict[str, Any]] = {(c["kind"], c["metadata"]["name"]): c for c in children}
    problems = [f"{name}: still there, deleted by the script" for name in sorted(set(nims) - set(expected))]
    problems += [f"{name}: missing" for name in sorted(set(expected) - set(nims))]
    for name in sorted(set(nims) & set(expected)):
        found = _nimservice_problems(nims[name], expected[name], by_kind, settings)
        problems += [f"{name}: {problem}" for problem in found]
    uids = {n["metadata"]["uid"] for n in nims.values()}
    for child in children:
        controllers = [r for r in child["metadata"].get("ownerReferences") or [] if r.get("controller")]
        if child["kind"] == "PersistentVolumeClaim" and not controllers:
            continue  # the namespace's shared engine claim: no owner, retired by the resync
        if not any(ref["uid"] in uids for ref in controllers):
            problems.append(f"{child['kind']} {child['metadata']['name']}: orphaned (its NimService is gone)")
    return problems


def _nimservice_problems(
    nim: dict[str, Any],
    spec: dict[str, Any],
    children: dict[tuple[str, str], dict[str, Any]],
    settings: OperatorSettings,
) -> list[str]:
    generation = nim["metadata"]["generation"]
    observed = (nim.get("status") or {}).get("observedGeneration")
    if observed != generation:
        return [f"observedGeneration {observed}, generation {generation}"]
    ready = _condition(nim, "Ready")
    if (ready.get("status"), ready.get("reason")) != ("True", "Serving"):
        return [f"Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}"]
    name = nim["metadata"]["name"]
    deployment = children.get(("Deployment", name))
    if deployment is None:
        return ["no Deployment"]
    problems = []
    if deployment["spec"].get("replicas") != spec.get("replicas", 1):
        replicas = deployment["spec"].get("replicas")
        problems.append(f"Deployment replicas {replicas}, spec {spec.get('replicas')}")
    key = engine_location(NimService.model_validate(nim), settings).cache_key
    served = deployment["spec"]["template"]["metadata"]["annotations"].get(ENGINE_KEY_ANNOTATION)
    if served != key:
        problems.append(f"Deployment serves engine {served}, the spec's model is {key}")
    config = children.get(("ConfigMap", triton_config_name(NimService.model_validate(nim))))
    delay = (spec.get("triton") or {}).get("dynamicBatching", {}).get("maxQueueDelayMicroseconds")
    text = (config or {}).get("data", {}).get("config.pbtxt", "")
    if delay is not None and f"max_queue_delay_microseconds: {delay}" not in text:
        problems.append(f"Triton config without the spec's queue delay {delay}")
    return problems


def duplicate_job_creates(audit_log: Path, namespace: str) -> list[str]:
    """Conversion Jobs created while one of the same name existed: two successful creates of one name with
    no successful delete between them (a Job goes with the NimService that created it and may come back)."""
    history: dict[str, list[str]] = defaultdict(list)
    with audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if ref.get("resource") != "jobs" or ref.get("namespace") != namespace or not ref.get("name"):
                continue
            code = (event.get("responseStatus") or {}).get("code", 0)
            if event.get("verb") == "create" and code == 201:
                history[ref["name"]].append("create")
            elif event.get("verb") == "delete" and code in (200, 202):
                history[ref["name"]].append("delete")
    duplicates = []
    for name, verbs in history.items():
        alive = 0
        for verb in verbs:
            alive = alive + 1 if verb == "create" else 0
            if alive > 1:
                duplicates.append(f"Job {name}: created again while it existed ({' '.join(verbs)})")
                break
    return duplicates


def job_creates(audit_log: Path, namespace: str) -> int:
    """Conversion Jobs created in `namespace` (successful creates in the audit log)."""
    count = 0
    with audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (
                ref.get("resource") == "jobs"
                and ref.get("namespace") == namespace
                and event.get("verb") == "create"
                and (event.get("responseStatus") or {}).get("code") == 201
            ):
                count += 1
    return count


def wait_for_garbage_collection(cluster: ExistingCluster, timeout: float = 120) -> float:
    """Returns (the seconds it took) once the garbage collector deletes what a deleted NimService owned.

    kube-controller-manager's garbage collector learns of a new CRD at its next discovery resync (every
    30 s); a NimService deleted before then leaves its children until a retry, minutes later. A cluster whose
    CRD was just installed is that fresh; the fault tests measure the operator, so they start after it.
    """
    started = time.monotonic()
    with fresh_namespace(cluster, "chaos-gc-probe") as namespace:  # not one the operator watches
        owner = {
            "apiVersion": "nimify.dev/v1alpha1",
            "kind": "NimService",
            "metadata": {"name": "probe", "namespace": namespace},
            "spec": {"model": {"uri": "pvc://models/probe.onnx"}},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(owner))
        uid = get_json(cluster, "nimservice/probe", "-n", namespace)["metadata"]["uid"]
        dependent = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "probe",
                "namespace": namespace,
                "ownerReferences": [
                    {"apiVersion": "nimify.dev/v1alpha1", "kind": "NimService", "name": "probe", "uid": uid}
                ],
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(dependent))
        cluster.kubectl("delete", "nimservice/probe", "-n", namespace)
        eventually(
            lambda: cluster.kubectl("get", "configmap/probe", "-n", namespace, check=False).returncode != 0,
            timeout=timeout,
            interval=1,
        )
    return time.monotonic() - started
