"""The operator's least-privilege RBAC, derived from the code's own list of what it reads and writes.

What the operator touches: the child kinds the controller watches (`controller.operator.CHILD_KINDS`) and
writes, its conversion pods (watched, never written), NimServices and their status, Events, and what kopf
itself needs. Nothing else: no Secrets (a conversion Job's `envFrom` is resolved by the kubelet, not by the
operator), no Nodes, no pods/exec or pods/log, nothing cluster-wide but kopf's read-only CRD watch.

`render_rbac_template()` writes it as the chart's `templates/rbac.yaml`: a ClusterRole when the operator
watches the whole cluster, one Role per namespace when it watches a list of them (kopf's namespace and CRD
scanning is then off, so nothing cluster-scoped is needed at all).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from nimify.api.nimservice import GROUP, PLURAL
from nimify.controller.operator import CHILD_KINDS

#: Writes every generated file of the chart (see nimify.install.chart).
REGENERATE_COMMAND = "nimify chart --output charts/nimify"
VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
#: kopf fills its indexes and handlers from a list followed by a watch; it never GETs single objects.
WATCH = ("list", "watch")
#: Server-side apply is a PATCH; on an absent object the apiserver creates it and authorizes `create` too.
APPLY = ("create", "patch")

#: How the controller writes each child kind (controller.kube.KubeWriter): `apply` for everything it keeps
#: in line with the spec; `create_if_absent` for the immutable conversion Job; a strategic-merge `patch` of
#: the shared engine claim's owners.
CHILD_WRITES: dict[str, tuple[str, ...]] = {
    "Job": ("create",),
    "Deployment": APPLY,
    "Service": APPLY,
    "ConfigMap": APPLY,
    "PersistentVolumeClaim": APPLY,
    "HorizontalPodAutoscaler": APPLY,
    "PodDisruptionBudget": APPLY,
}


@dataclass(frozen=True)
class Grant:
    """Verbs on one resource, and why the operator needs them."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    cluster_scoped: bool = False
    """A cluster-scoped resource: granted by the ClusterRole only (the namespaced mode does without)."""


def _ordered(verbs: Iterable[str]) -> tuple[str, ...]:
    wanted = set(verbs)
    unknown = wanted - set(VERB_ORDER)
    if unknown:
        raise ValueError(f"unknown RBAC verbs {sorted(unknown)}")
    return tuple(verb for verb in VERB_ORDER if verb in wanted)


def operator_grants() -> tuple[Grant, ...]:
    """Every permission the operator needs, one per resource."""
    grants = [
        Grant(GROUP, PLURAL, _ordered((*WATCH, "patch")), "watched; kopf patches its annotations on them"),
        Grant(GROUP, f"{PLURAL}/status", ("patch",), "conditions, engine, endpoints"),
        Grant("", "events", ("create",), "events on NimServices (kopf.event)"),
        Grant("", "pods", WATCH, "conversion pods: progress and termination message of each build"),
    ]
    missing = [kind for kind, *_ in CHILD_KINDS if kind not in CHILD_WRITES]
    if missing:
        raise ValueError(f"child kinds without declared writes: {missing}; add them to CHILD_WRITES")
    for kind, group, _version, plural in CHILD_KINDS:
        writes = CHILD_WRITES[kind]
        grants.append(Grant(group, plural, _ordered((*WATCH, *writes)), f"{kind}: watched, {_how(writes)}"))
    grants.append(
        Grant(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            WATCH,
            "kopf notices CRDs (re)installed while it runs",
            cluster_scoped=True,
        )
    )
    return tuple(sorted(grants, key=lambda grant: (grant.cluster_scoped, grant.group, grant.resource)))


def _how(writes: tuple[str, ...]) -> str:
    if writes == APPLY:
        return "server-side applied"
    if writes == ("create",):
        return "created once, never changed (immutable)"
    return "written with " + ", ".join(writes)


def _rules(grants: Iterable[Grant], indent: str) -> list[str]:
    lines = []
    for grant in grants:
        lines += [
            f"{indent}# {grant.why}",
            f"{indent}- apiGroups: {json.dumps([grant.group])}",
            f"{indent}  resources: {json.dumps([grant.resource])}",
            f"{indent}  verbs: {json.dumps(list(grant.verbs))}",
        ]
    return lines


def _metadata(kind_name: str, context: str, namespace: str | None = None) -> list[str]:
    lines = [
        "metadata:",
        f'  name: {{{{ include "nimify.fullname" {context} }}}}',
    ]
    if namespace:
        lines.append(f"  namespace: {namespace}")
    lines += ["  labels:", f'    {{{{- include "nimify.labels" {context} | nindent 4 }}}}']
    return [f"kind: {kind_name}", *lines]


def _binding(kind: str, role_kind: str, context: str, namespace: str | None = None) -> list[str]:
    return [
        "---",
        "apiVersion: rbac.authorization.k8s.io/v1",
        *_metadata(kind, context, namespace),
        "roleRef:",
        "  apiGroup: rbac.authorization.k8s.io",
        f"  kind: {role_kind}",
        f'  name: {{{{ include "nimify.fullname" {context} }}}}',
        "subjects:",
        "  - kind: ServiceAccount",
        f'    name: {{{{ include "nimify.serviceAccountName" {context} }}}}',
        "    namespace: {{ $.Release.Namespace }}",
    ]


def _user_roles() -> list[str]:
    """ClusterRoles aggregated into Kubernetes' admin/edit and view roles: whoever may edit a namespace may
    manage its NimServices, whoever may view it may read them."""
    edit = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
    lines: list[str] = []
    for suffix, aggregate_to, grants in (
        (
            "edit",
            ("admin", "edit"),
            (
                Grant(GROUP, PLURAL, edit, "manage NimServices"),
                Grant(GROUP, f"{PLURAL}/scale", ("get", "update", "patch"), "kubectl scale"),
                Grant(GROUP, f"{PLURAL}/status", ("get",), "read status"),
            ),
        ),
        (
            "view",
            ("view",),
            (
                Grant(GROUP, PLURAL, ("get", "list", "watch"), "read NimServices"),
                Grant(GROUP, f"{PLURAL}/status", ("get",), "read status"),
            ),
        ),
    ):
        lines += [
            "---",
            "apiVersion: rbac.authorization.k8s.io/v1",
            "kind: ClusterRole",
            "metadata:",
            f'  name: {{{{ include "nimify.fullname" . }}}}-{suffix}',
            "  labels:",
            '    {{- include "nimify.labels" . | nindent 4 }}',
            *(f'    rbac.authorization.k8s.io/aggregate-to-{role}: "true"' for role in aggregate_to),
            "rules:",
            *_rules(grants, "  "),
        ]
    return lines


def render_rbac_template() -> str:
    """The chart's templates/rbac.yaml."""
    grants = operator_grants()
    namespaced = [grant for grant in grants if not grant.cluster_scoped]
    lines = [
        f"{{{{- /* Generated from operator/nimify by `{REGENERATE_COMMAND}`; do not edit. */}}}}",
        "{{- if .Values.rbac.create }}",
        "{{- if .Values.watchNamespaces }}",
        "{{- range $namespace := .Values.watchNamespaces }}",
        "---",
        "apiVersion: rbac.authorization.k8s.io/v1",
        *_metadata("Role", "$", "{{ $namespace }}"),
        "rules:",
        *_rules(namespaced, "  "),
        *_binding("RoleBinding", "Role", "$", "{{ $namespace }}"),
        "{{- end }}",
        "{{- else }}",
        "---",
        "apiVersion: rbac.authorization.k8s.io/v1",
        *_metadata("ClusterRole", "."),
        "rules:",
        *_rules(grants, "  "),
        *_binding("ClusterRoleBinding", "ClusterRole", "."),
        "{{- end }}",
        "{{- if .Values.rbac.aggregateToDefaultRoles }}",
        *_user_roles(),
        "{{- end }}",
        "{{- end }}",
    ]
    return "\n".join(lines) + "\n"
