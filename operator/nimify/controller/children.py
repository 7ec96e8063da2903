"""Every kind of object the operator touches, and how: the one list its watches, indexes, writer and the
generated RBAC read.

A child kind is watched (list + watch, with a server-side selector on the managed-by label), indexed by
(namespace, name) and written in one way: server-side applied (create + patch) or created once (create).
Prunable kinds are also deleted when a NimService no longer wants them. Besides its children the operator
reads NimServices and patches their status, watches the pods of its children and posts Events
(`OPERATOR_ACCESS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nimify.api.conditions import ConditionReason
from nimify.api.nimservice import GROUP, PLURAL


class Index(StrEnum):
    """Ids of the operator's kopf indexes; kopf passes each to handlers as a keyword argument of that name."""

    JOBS = "job_index"
    DEPLOYMENTS = "deployment_index"
    SERVICES = "service_index"
    CONFIG_MAPS = "configmap_index"
    CLAIMS = "persistentvolumeclaim_index"
    AUTOSCALERS = "horizontalpodautoscaler_index"  # ours, and the ones KEDA makes for our ScaledObjects
    SCALED_OBJECTS = "scaledobject_index"
    DISRUPTION_BUDGETS = "poddisruptionbudget_index"
    INGRESSES = "ingress_index"
    HTTP_ROUTES = "httproute_index"
    BUILD_PODS = "build_pod_index"  # conversion pods by (namespace, Job name)
    SERVER_PODS = "server_pod_index"  # Triton pods' trouble by (namespace, NimService name)
    NIMSERVICES = "nimservice_index"
    READY_ENGINES = "ready_engine_index"  # ready engines by (namespace, claim, cache key)
    BUILD_JOBS = "build_job_index"  # NimServices by (namespace, the conversion Job their spec needs)
    CLAIM_USERS = "claim_user_index"  # NimServices by (namespace, the engine claim their spec uses)


class Write(StrEnum):
    """How the operator writes a child kind."""

    APPLY = "apply"
    """Server-side apply with the operator's field manager (creates the object when missing)."""

    CREATE = "create"
    """Created once when missing and never changed (an immutable, deterministically named Job)."""


@dataclass(frozen=True)
class ChildKind:
    """One kind of child object."""

    kind: str
    group: str  # "" for the core API group
    version: str
    plural: str
    index: Index
    write: Write
    prunable: bool = True
    """Deleted when the NimService that controls it no longer wants it."""
    drift: bool = True
    """Out-of-band edits of the fields the operator sets are reverted (see controller/drift.py)."""
    optional: bool = False
    """An API a cluster may not serve (a CRD that may be missing); the operator runs without it."""
    missing: tuple[ConditionReason, str] | None = None
    """For an optional kind: the reason and the advice reported when the cluster does not serve it."""
    wakes_owner: bool = False
    """A change of one reconciles its NimService at once; others wait for the resync."""
    reads: tuple[str, ...] = ()
    """Dotted paths the reconcile reads of a live one, beyond what every kind keeps (identity, ownership,
    nimify's applied hash and applied fields): all its index holds (see controller/projection.py). A path
    ending in `[a,b]` names a list whose elements keep only the keys a and b."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def verbs(self) -> tuple[str, ...]:
        """The RBAC verbs the operator needs on this kind (watching is list + watch)."""
        writes = ("create", "patch") if self.write is Write.APPLY else ("create",)
        return ("list", "watch", *writes, *(("delete",) if self.prunable else ()))


JOB = ChildKind(
    "Job",
    "batch",
    "v1",
    "jobs",
    Index.JOBS,
    Write.CREATE,
    prunable=False,
    drift=False,
    wakes_owner=True,
    reads=("status.conditions",),
)
DEPLOYMENT = ChildKind(
    "Deployment",
    "apps",
    "v1",
    "deployments",
    Index.DEPLOYMENTS,
    Write.APPLY,
    prunable=False,
    wakes_owner=True,
    # The rollout (status, generation), what the pods serve (template annotations), the replica count and
    # its manager, the claims mounted, and the ports drift may have renumbered (containers).
    reads=(
        "metadata.generation",
        "spec.replicas",
        "spec.template.metadata.annotations",
        "spec.template.spec.containers[name,ports]",
        "spec.template.spec.volumes[name,persistentVolumeClaim]",
        "status",
    ),
)
SERVICE = ChildKind(
    "Service", "", "v1", "services", Index.SERVICES, Write.APPLY, prunable=False, reads=("spec.ports",)
)
CONFIG_MAP = ChildKind("ConfigMap", "", "v1", "configmaps", Index.CONFIG_MAPS, Write.APPLY, prunable=False)
# Claims hold engines: an edit of one (e.g. an expansion) is its owner's business, only a spec change
# re-applies it; a dedicated claim is deleted once nothing wants or mounts it.
CLAIM = ChildKind(
    "PersistentVolumeClaim", "", "v1", "persistentvolumeclaims", Index.CLAIMS, Write.APPLY, drift=False
)
# An autoscaler's status (ScalingActive, replicas) is reported on the NimService: its changes wake it. KEDA's
# HPA is owned by the ScaledObject, not the NimService; it carries the NimService label (copied by KEDA).
AUTOSCALER = ChildKind(
    "HorizontalPodAutoscaler",
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
    Index.AUTOSCALERS,
    Write.APPLY,
    wakes_owner=True,
    reads=("status",),  # conditions and replicas: status.autoscaler and ScalingActive
)
SCALED_OBJECT = ChildKind(
    "ScaledObject",
    "keda.sh",
    "v1alpha1",
    "scaledobjects",
    Index.SCALED_OBJECTS,
    Write.APPLY,
    optional=True,
    missing=(
        ConditionReason.KEDA_MISSING,
        "install KEDA or set spec.autoscaling.autoscaler: HorizontalPodAutoscaler",
    ),
    wakes_owner=True,
    reads=("status",),  # conditions and hpaName (the HPA KEDA made)
)
DISRUPTION_BUDGET = ChildKind(
    "PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets", Index.DISRUPTION_BUDGETS, Write.APPLY
)
INGRESS = ChildKind("Ingress", "networking.k8s.io", "v1", "ingresses", Index.INGRESSES, Write.APPLY)
HTTP_ROUTE = ChildKind(
    "HTTPRoute",
    "gateway.networking.k8s.io",
    "v1",
    "httproutes",
    Index.HTTP_ROUTES,
    Write.APPLY,
    optional=True,
    missing=(ConditionReason.GATEWAY_API_MISSING, "install the Gateway API CRDs or use spec.expose.ingress"),
)

CHILD_KINDS: tuple[ChildKind, ...] = (
    JOB,
    DEPLOYMENT,
    SERVICE,
    CONFIG_MAP,
    CLAIM,
    AUTOSCALER,
    SCALED_OBJECT,
    DISRUPTION_BUDGET,
    INGRESS,
    HTTP_ROUTE,
)
CHILD_BY_KIND: dict[str, ChildKind] = {child.kind: child for child in CHILD_KINDS}


@dataclass(frozen=True)
class ApiAccess:
    """Access the operator needs beyond its children."""

    group: str
    plural: str  # may name a subresource: "nimservices/status"
    verbs: tuple[str, ...]
    why: str


OPERATOR_ACCESS: tuple[ApiAccess, ...] = (
    ApiAccess(
        GROUP,
        PLURAL,
        ("list", "watch"),
        "the watched resource; kopf writes nothing on it (every handler is an event handler)",
    ),
    ApiAccess(GROUP, f"{PLURAL}/status", ("patch",), "conditions, replicas, engine, endpoints"),
    ApiAccess("", "pods", ("list", "watch"), "conversion results and Triton pods' trouble, read only"),
    ApiAccess("", "events", ("create",), "events on NimServices"),
    ApiAccess("", "namespaces", ("list", "watch"), "kopf resolves --namespace patterns"),
    ApiAccess(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf notices an optional API (Gateway API, KEDA) being installed",
    ),
)
