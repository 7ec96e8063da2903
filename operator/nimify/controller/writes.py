"""The one writer pass of a reconcile: run the desired set's actions in order and say how each went.

A child the apiserver refuses (admission, validation, quota, permissions, an API the cluster lacks) does not
stop the pass: the refusal becomes a `Refusal` the status reports, and the actions that depend on it (the same
child, or one that `requires` it) are skipped. Anything else (a timeout, a 5xx, a conflict) is not the spec's
fault: it propagates, and the reconcile is retried as a whole.

A write the watch has not delivered yet is not sent twice (`RecentWrites`): the namespace's engine claim and
the conversion Job a thousand NimServices need are each written once, not once per NimService that
reconciles before the watch shows them, and neither is a child two triggers reconcile back to back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

from lightkube import ApiError

from nimify.api.conditions import ConditionReason
from nimify.controller import metrics
from nimify.controller.actions import (
    Action,
    Apply,
    Create,
    Delete,
    HandOverReplicas,
    Target,
)
from nimify.controller.children import CHILD_BY_KIND
from nimify.controller.drift import ChildState, applied_hash

RECENT_SECONDS = 30.0
"""How long a write stands for its object before the watch shows it (a write older than that is sent again:
one lost in between is repaired, at the cost of one request)."""

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

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...

    async def post_event(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Refusal:
    """A child the apiserver would not take."""

    kind: str
    name: str
    reason: str  # ChildRejected, or the missing API's (GatewayApiMissing, KedaMissing)
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
    if child is not None and child.missing is not None and code == HTTPStatus.NOT_FOUND:
        reason, advice = child.missing
        return Refusal(
            kind,
            name,
            reason.value,
            f"{kind} {name}: this cluster does not serve {child.api_version} {child.plural}; {advice}",
        )
    if isinstance(error, ApiError):
        message = error.status.message or str(error)
    else:
        message = f"HTTP {code}: {str(error)[:300]}"
    return Refusal(kind, name, ConditionReason.CHILD_REJECTED.value, f"{kind} {name} was refused: {message}")


WrittenKey = tuple[str, str, str]  # (kind, namespace, name)


class RecentWrites:
    """Objects this operator wrote that the watch may not have delivered yet, with the hash of what it wrote.

    An entry is made before the request goes out, so a reconcile that plans the same write while the first
    is in flight skips it too; a failed request removes it again. Only a child the watch shows missing, or
    with an older applied hash, is skipped this way: a child someone else changed (drift) is re-applied.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[WrittenKey, tuple[str, float]] = {}
        self._sweep_at = 1024  # entries; expired ones are dropped when there are this many

    def covers(self, key: WrittenKey, digest: str) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        if self._clock() - entry[1] > RECENT_SECONDS:
            del self._entries[key]
            return False
        return entry[0] == digest

    def wrote(self, key: WrittenKey, digest: str) -> None:
        now = self._clock()
        self._entries[key] = (digest, now)
        if len(self._entries) >= self._sweep_at:
            self._entries = {k: e for k, e in self._entries.items() if now - e[1] <= RECENT_SECONDS}
            self._sweep_at = max(1024, 2 * len(self._entries))

    def forget(self, key: WrittenKey) -> None:
        """The watch showed the object deleted (or the write failed): a later write must go out."""
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def _recent_key(namespace: str, action: Action) -> tuple[WrittenKey, str] | None:
    """What `RecentWrites` files this action under, for the writes it may stand for."""
    match action:
        case Apply(desired=desired, state=state) if state in (ChildState.MISSING, ChildState.CHANGED):
            return (desired["kind"], namespace, desired["metadata"]["name"]), applied_hash(desired)
        case Create(desired=desired):
            # Named from what it builds: another NimService's Job of that name is the same Job.
            return (desired["kind"], namespace, desired["metadata"]["name"]), ""
    return None


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


async def write_all(
    writer: Writer, namespace: str, actions: list[Action], recent: RecentWrites | None = None
) -> Written:
    written = Written()
    failed: set[Target] = set()
    for action in actions:
        target = action.target
        if target in failed or failed.intersection(action.requires):
            written.skipped.add(target)
            continue
        if isinstance(action, Delete) and recent is not None:
            # Gone once this returns: wanting it again (an autoscaler switched back) must write it again.
            recent.forget((action.kind, namespace, action.name))
        filed = _recent_key(namespace, action) if recent is not None else None
        if filed is not None and recent is not None:
            if recent.covers(*filed):
                continue  # sent a moment ago (maybe still in flight): the watch will show it
            recent.wrote(*filed)
        try:
            await _run(writer, namespace, action, written)
        except HttpStatusError as error:
            if filed is not None and recent is not None:
                recent.forget(filed[0])
            if (refused := refusal(*target, error)) is None:
                raise
            metrics.CHILD_REFUSALS.labels(kind=target[0]).inc()
            written.refusals.append(refused)
            failed.add(target)
        except BaseException:
            if filed is not None and recent is not None:
                recent.forget(filed[0])
            raise
    return written
