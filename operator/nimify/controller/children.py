"""Every kind of object the operator touches, and how: the one list its watches, indexes, writer, desired set
and the generated RBAC read.

Each kind has a scope: one per engine (the conversion Job, the engine claim), one per serving unit whose
engine is ready (its Triton config and Deployment), or one per NimService. A kind of the last scope names its
renderer here and the desired set renders it with no code of its own: adding one touches this file and its
renderer only.

A child kind is watched (list + watch, with a server-side selector on the managed-by label), indexed by
(namespace, name) and written in one way: server-side applied (create + patch) or created once (create).
Prunable kinds are also deleted when a NimService no longer wants them. Besides its children the operator
reads NimServices and patches their status, watches the pods of its children and posts Events
(`OPERATOR_ACCESS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nimify.api import NimService
from nimify.api.conditions import ConditionReason
from nimify.api.nimservice import GROUP, PLURAL
from nimify.render.autoscaler import render_autoscaler
from nimify.render.disruption_budget import render_disruption_budget
from nimify.render.network_policy import render_network_policy
from nimify.render.routes import render_grpc_route, render_http_route, render_ingress
from nimify.render.scaled_object import render_scaled_object
from nimify.render.service import render_service
from nimify.settings import OperatorSettings


class Index(StrEnum):
    """Ids of the operator's kopf indexes; kopf passes each to handlers as a keyword argument of that name."""

    JOBS = "job_index"
    DEPLOYMENTS = "deployment_index"
    UNIT_DEPLOYMENTS = "unit_deployment_index"  # Deployment names by (namespace, NimService)
    SERVICES = "service_index"
    CONFIG_MAPS = "configmap_index"
    UNIT_CONFIG_MAPS = "unit_configmap_index"  # ConfigMap names by (namespace, NimService)
    CLAIMS = "persistentvolumeclaim_index"
    AUTOSCALERS = "horizontalpodautoscaler_index"  # ours, and the ones KEDA makes for our ScaledObjects
    SCALED_OBJECTS = "scaledobject_index"
    DISRUPTION_BUDGETS = "poddisruptionbudget_index"
    INGRESSES = "ingress_index"
    HTTP_ROUTES = "httproute_index"
    GRPC_ROUTES = "grpcroute_index"
    NETWORK_POLICIES = "networkpolicy_index"
    BUILD_PODS = "build_pod_index"  # conversion pods by (namespace, Job name)
    SERVER_PODS = "server_pod_index"  # Triton pods' trouble by (namespace, NimService name)
    NIMSERVICES = "nimservice_index"
    READY_ENGINES = "ready_engine_index"  # ready engines by (namespace, claim, cache key)
    BUILD_JOBS = "build_job_index"  # NimServices by (namespace, a conversion Job their units need)
    CLAIM_USERS = "claim_user_index"  # NimServices by (namespace, an engine claim their units use)
    TUNINGS = "tuning_index"  # recorded tunings by (namespace, tuning key)


class Write(StrEnum):
    """How the operator writes a child kind."""

    APPLY = "apply"
    """Server-side apply with the operator's field manager (creates the object when missing)."""

    CREATE = "create"
    """Created once when missing and never changed (an immutable, deterministically named Job)."""


class Scope(StrEnum):
    """How many of a kind one NimService has."""

    ENGINE = "engine"
    """One per engine its units need (named from the engine: units and NimServices share them)."""

    UNIT = "unit"
    """One per serving unit whose engine is ready; a unit's are deleted when the unit goes away."""

    NIMSERVICE = "nimservice"
    """At most one, named after the NimService, rendered by the kind's `render`."""


Renderer = Callable[[NimService, OperatorSettings], dict[str, Any] | None]


@dataclass(frozen=True)
class ChildKind:
    """One kind of child object."""

    kind: str
    group: str  # "" for the core API group
    version: str
    plural: str
    index: Index
    write: Write
    scope: Scope = Scope.NIMSERVICE
    render: Renderer | None = None
    """For a kind of NimService scope: the object the spec wants, or None (then it is deleted if prunable)."""
    needs_server: bool = False
    """Rendered only once the serving unit has a Deployment (it acts on it); until then left as it is."""
    route: bool = False
    """Routes outside traffic to the NimService: its host is an endpoint once one is in place."""
    unit_index: Index | None = None
    """For a kind of unit scope: the index of its names by (namespace, NimService), to find retired units'."""
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
    scope=Scope.ENGINE,
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
    scope=Scope.UNIT,
    unit_index=Index.UNIT_DEPLOYMENTS,
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
    "Service",
    "",
    "v1",
    "services",
    Index.SERVICES,
    Write.APPLY,
    render=lambda nim, _: render_service(nim),
    # The NimService's own is always wanted; a rollout's candidate's goes with the candidate.
    reads=("spec.ports",),
)
CONFIG_MAP = ChildKind(
    "ConfigMap",
    "",
    "v1",
    "configmaps",
    Index.CONFIG_MAPS,
    Write.APPLY,
    scope=Scope.UNIT,
    unit_index=Index.UNIT_CONFIG_MAPS,
)
# Claims hold engines: an edit of one (e.g. an expansion) is its owner's business, only a spec change
# re-applies it; a dedicated claim is deleted once nothing wants or mounts it.
CLAIM = ChildKind(
    "PersistentVolumeClaim",
    "",
    "v1",
    "persistentvolumeclaims",
    Index.CLAIMS,
    Write.APPLY,
    scope=Scope.ENGINE,
    drift=False,
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
    # At most one of the HPA and the ScaledObject is rendered; the other is deleted first, so they never
    # both scale the Deployment.
    render=render_autoscaler,
    needs_server=True,
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
    render=render_scaled_object,
    needs_server=True,
    optional=True,
    missing=(
        ConditionReason.KEDA_MISSING,
        "install KEDA or set spec.autoscaling.autoscaler: HorizontalPodAutoscaler",
    ),
    wakes_owner=True,
    reads=("status",),  # conditions and hpaName (the HPA KEDA made)
)
DISRUPTION_BUDGET = ChildKind(
    "PodDisruptionBudget",
    "policy",
    "v1",
    "poddisruptionbudgets",
    Index.DISRUPTION_BUDGETS,
    Write.APPLY,
    render=lambda nim, _: render_disruption_budget(nim),
    needs_server=True,
)
INGRESS = ChildKind(
    "Ingress",
    "networking.k8s.io",
    "v1",
    "ingresses",
    Index.INGRESSES,
    Write.APPLY,
    render=lambda nim, _: render_ingress(nim),
    route=True,
)
HTTP_ROUTE = ChildKind(
    "HTTPRoute",
    "gateway.networking.k8s.io",
    "v1",
    "httproutes",
    Index.HTTP_ROUTES,
    Write.APPLY,
    render=lambda nim, _: render_http_route(nim),
    route=True,
    optional=True,
    missing=(ConditionReason.GATEWAY_API_MISSING, "install the Gateway API CRDs or use spec.expose.ingress"),
)
GRPC_ROUTE = ChildKind(
    "GRPCRoute",
    "gateway.networking.k8s.io",
    "v1",
    "grpcroutes",
    Index.GRPC_ROUTES,
    Write.APPLY,
    render=lambda nim, _: render_grpc_route(nim),
    route=True,
    optional=True,
    missing=(
        ConditionReason.GATEWAY_API_MISSING,
        "install the Gateway API CRDs (v1.1 or later: GRPCRoute v1)",
    ),
)
NETWORK_POLICY = ChildKind(
    "NetworkPolicy",
    "networking.k8s.io",
    "v1",
    "networkpolicies",
    Index.NETWORK_POLICIES,
    Write.APPLY,
    render=lambda nim, _: render_network_policy(nim),
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
    GRPC_ROUTE,
    NETWORK_POLICY,
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
    ApiAccess(
        "",
        "pods",
        ("list", "watch"),
        "conversion results, Triton pods' trouble, and a canary's ready pods for its answer gate; read only",
    ),
    ApiAccess("", "events", ("create",), "events on NimServices"),
    ApiAccess(
        "",
        "secrets",
        ("get",),
        "by name only: the pull secrets of a NimService serving a model image (spec.imagePullSecrets), to"
        " read the image's labels from its registry; never listed or watched",
    ),
    ApiAccess("", "namespaces", ("list", "watch"), "kopf resolves --namespace patterns"),
    ApiAccess(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf notices an optional API (Gateway API, KEDA) being installed",
    ),
)
