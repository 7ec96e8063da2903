"""The operator's least-privilege RBAC, derived from the code's own list of what it touches.

That list is `controller.children`: every child kind with how the operator writes it (server-side applied:
create + patch; created once: create; pruned: delete; all watched: list + watch), and `OPERATOR_ACCESS`, the
rest (NimServices and their status, pods read-only, Events, kopf's discovery, and `get` on Secrets: the pull
secrets a NimService names for its model image, read by name; a conversion Job's `envFrom` is resolved by the
kubelet, not the operator). Nothing else: no listing of Secrets, no Nodes, no pods/exec or pods/log.

`render_rbac_template()` writes it as the chart's `templates/rbac.yaml`: a ClusterRole when the operator
watches the whole cluster; one Role per namespace when it watches a list of them (`nimify run` then turns
kopf's cluster scanning off, so nothing cluster-scoped is granted or needed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from nimify.api.nimservice import GROUP, PLURAL
from nimify.controller.children import CHILD_KINDS, OPERATOR_ACCESS, ChildKind, Write

#: Writes every generated file of the chart (see nimify.install.chart).
REGENERATE_COMMAND = "nimify chart --output charts/nimify"
VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
#: The cluster-scoped resources among what the operator touches: a Role cannot grant them (the cluster test
#: checks this set against the apiserver's discovery).
CLUSTER_SCOPED = frozenset({("", "namespaces"), ("apiextensions.k8s.io", "customresourcedefinitions")})
#: Access the registry lists that neither way the chart runs the operator uses, and why.
NOT_USED_BY_THE_CHART = {
    ("", "namespaces"): "kopf lists Namespaces only to match --namespace globs; the chart passes none"
    " (cluster-wide) or exact names (scanning off)",
}


@dataclass(frozen=True)
class Grant:
    """Verbs on one resource, and why the operator needs them."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str

    @property
    def cluster_scoped(self) -> bool:
        """Granted by the ClusterRole only: the namespaced mode does without."""
        return (self.group, self.resource) in CLUSTER_SCOPED


def _ordered(verbs: Iterable[str]) -> tuple[str, ...]:
    wanted = set(verbs)
    unknown = wanted - set(VERB_ORDER)
    if unknown:
        raise ValueError(f"unknown RBAC verbs {sorted(unknown)}")
    return tuple(verb for verb in VERB_ORDER if verb in wanted)


def _why(child: ChildKind) -> str:
    how = "server-side applied" if child.write is Write.APPLY else "created once, never changed"
    return f"{child.kind}: watched, {how}" + (", deleted when no longer wanted" if child.prunable else "")


def operator_grants() -> tuple[Grant, ...]:
    """Every permission the operator needs, one per resource."""
    grants = [
        Grant(access.group, access.plural, _ordered(access.verbs), access.why)
        for access in OPERATOR_ACCESS
        if (access.group, access.plural) not in NOT_USED_BY_THE_CHART
    ]
    grants += [Grant(child.group, child.plural, _ordered(child.verbs), _why(child)) for child in CHILD_KINDS]
    keys = [(grant.group, grant.resource) for grant in grants]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a resource is listed twice: {sorted(k for k in keys if keys.count(k) > 1)}")
    return tuple(sorted(grants, key=lambda grant: (grant.cluster_scoped, grant.group, grant.resource)))


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
