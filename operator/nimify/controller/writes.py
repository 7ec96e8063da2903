"""The one writer pass of a reconcile: run the desired set's actions in order and say how each went.

A child the apiserver refuses (admission, validation, quota, permissions, an API the cluster lacks) does not
stop the pass: the refusal becomes a `Refusal` the status reports, and the actions that depend on it (the same
child, or one that `requires` it) are skipped. Anything else (a timeout, a 5xx, a conflict) is not the spec's
fault: it propagates, and the reconcile is retried as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

from lightkube import ApiError

from nimify.api.conditions import ConditionReason
from nimify.controller import metrics
from nimify.controller.actions import (
    Action,
    AddClaimOwner,
    Apply,
    Create,
    Delete,
    HandOverReplicas,
    Target,
)
from nimify.controller.children import CHILD_BY_KIND
from nimify.controller.drift import ChildState

# Answers that say "this request can never succeed as it is": the spec, a policy or the cluster must change.
REFUSALS = {
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.FORBIDDEN,
    HTTPStatus.NOT_FOUND,
    HTTPStatus.UNPROCESSABLE_ENTITY,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
}


# lightkube raises ApiError (a subclass of its HTTP client's status error) when the apiserver answers with a
# Status, and the HTTP client's own error for a bare answer such as the 404 of an API group the apiserver does
# not serve; naming the base through ApiError keeps this independent of which HTTP client lightkube uses.
HttpStatusError: type[Exception] = ApiError.__mro__[1]


class Writer(Protocol):
    """What the pass needs from the API layer (`KubeWriter`; an in-memory cluster in unit tests)."""

    async def apply(self, desired: dict[str, Any]) -> None: ...

    async def create(self, desired: dict[str, Any]) -> bool: ...

    async def delete(self, kind: str, namespace: str, name: str) -> None: ...

    async def remove_elements(self, kind: str, namespace: str, name: str, pointers: list[str]) -> None: ...

    async def hand_over_replicas(self, namespace: str, name: str, replicas: int) -> None: ...

    async def add_claim_owner(self, namespace: str, name: str, owner: dict[str, Any]) -> None: ...

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...

    async def post_event(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Refusal:
    """A child the apiserver would not take."""

    kind: str
    name: str
    reason: str  # ChildRejected or GatewayApiMissing
    message: str


@dataclass
class Written:
    """How the pass went."""

    refusals: list[Refusal] = field(default_factory=list)
    created: set[Target] = field(default_factory=set)  # created just now (not found existing)
    skipped: set[Target] = field(default_factory=set)

    def ok(self, target: Target) -> bool:
        return target not in self.skipped and all((r.kind, r.name) != target for r in self.refusals)


def refusal(kind: str, name: str, error: Exception) -> Refusal | None:
    """The refusal an API error stands for, or None when it is no refusal (retry the reconcile)."""
    if isinstance(error, ApiError):
        code = int(error.status.code or 0)
    else:
        code = int(getattr(getattr(error, "response", None), "status_code", 0))
    if code not in REFUSALS:
        return None
    child = CHILD_BY_KIND.get(kind)
    if child is not None and child.optional and code == HTTPStatus.NOT_FOUND:
        return Refusal(
            kind,
            name,
            ConditionReason.GATEWAY_API_MISSING.value,
            f"{kind} {name}: this cluster does not serve {child.api_version} {child.plural};"
            " install the Gateway API CRDs or use spec.expose.ingress",
        )
    if isinstance(error, ApiError):
        message = error.status.message or str(error)
    else:
        message = f"HTTP {code}: {str(error)[:300]}"
    return Refusal(kind, name, ConditionReason.CHILD_REJECTED.value, f"{kind} {name} was refused: {message}")


async def _run(writer: Writer, namespace: str, action: Action, written: Written) -> None:
    match action:
        case Apply(desired=desired, state=state, remove=remove):
            if remove:
                await writer.remove_elements(
                    desired["kind"], namespace, desired["metadata"]["name"], list(remove)
                )
            await writer.apply(desired)
            if state is ChildState.DRIFTED:
                metrics.DRIFT_CORRECTIONS.labels(kind=desired["kind"]).inc()
        case Create(desired=desired):
            if await writer.create(desired):
                written.created.add(action.target)
        case Delete(kind=kind, name=name):
            await writer.delete(kind, namespace, name)
        case HandOverReplicas(name=name, replicas=replicas):
            await writer.hand_over_replicas(namespace, name, replicas)
        case AddClaimOwner(claim=claim, owner=owner):
            await writer.add_claim_owner(namespace, claim, owner)


async def write_all(writer: Writer, namespace: str, actions: list[Action]) -> Written:
    written = Written()
    failed: set[Target] = set()
    for action in actions:
        target = action.target
        if target in failed or failed.intersection(action.requires):
            written.skipped.add(target)
            continue
        try:
            await _run(writer, namespace, action, written)
        except HttpStatusError as error:
            if (refused := refusal(*target, error)) is None:
                raise
            metrics.CHILD_REFUSALS.labels(kind=target[0]).inc()
            written.refusals.append(refused)
            failed.add(target)
    return written
