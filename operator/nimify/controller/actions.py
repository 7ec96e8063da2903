"""The writes one reconcile asks for, as plain values: `desired.py` produces them, `writes.py` runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nimify.controller.drift import ChildState

Target = tuple[str, str]  # (kind, name) in the NimService's namespace


@dataclass(frozen=True)
class Apply:
    """Server-side apply a child; `remove` first (JSON pointers of renumbered ports) when it drifted."""

    desired: dict[str, Any]
    state: ChildState
    remove: tuple[str, ...] = ()
    requires: tuple[Target, ...] = ()

    @property
    def target(self) -> Target:
        return self.desired["kind"], self.desired["metadata"]["name"]


@dataclass(frozen=True)
class Create:
    """Create an immutable child unless it exists (the conversion Job)."""

    desired: dict[str, Any]
    requires: tuple[Target, ...] = ()

    @property
    def target(self) -> Target:
        return self.desired["kind"], self.desired["metadata"]["name"]


@dataclass(frozen=True)
class Delete:
    """Delete a child the NimService controls and no longer wants."""

    kind: str
    name: str
    requires: tuple[Target, ...] = ()

    @property
    def target(self) -> Target:
        return self.kind, self.name


@dataclass(frozen=True)
class HandOverReplicas:
    """Keep the Deployment's live replica count while nimify stops applying spec.replicas."""

    name: str
    replicas: int
    requires: tuple[Target, ...] = ()

    @property
    def target(self) -> Target:
        return "Deployment", self.name


@dataclass(frozen=True)
class AddClaimOwner:
    """Make the NimService one more (non-controlling) owner of the shared engine claim."""

    claim: str
    owner: dict[str, Any] = field(default_factory=dict)
    requires: tuple[Target, ...] = ()

    @property
    def target(self) -> Target:
        return "PersistentVolumeClaim", self.claim


Action = Apply | Create | Delete | HandOverReplicas | AddClaimOwner
