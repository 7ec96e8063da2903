"""What kopf's watches last saw of children, pods and peers, read without a single API request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nimify.api import EngineRecord, TuningStatus
from nimify.api.status import AnswerGateStatus
from nimify.controller.children import CHILD_KINDS, Index
from nimify.controller.pods import PodTrouble, deployment_pod, worst_trouble
from nimify.controller.rollout_analysis import Figures

ObjectKey = tuple[str, str]  # (namespace, name)
Body = dict[str, Any]


def first(index: Mapping[Any, Any], key: Any) -> Any:
    """The first value a kopf index holds for `key` (kopf stores a collection per key), or None."""
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


@dataclass(frozen=True)
class ReadyEngine:
    """A ready engine as a NimService's status records it, and which NimService that is."""

    record: EngineRecord
    served_by: str


@dataclass(frozen=True)
class RecordedTuning:
    """A tuning as a NimService's status records it, and which NimService that is."""

    tuning: TuningStatus
    recorded_by: str


@dataclass
class Observed:
    """Views over kopf indexes (or plain dicts in unit tests), keyed by (namespace, name) per kind."""

    children: Mapping[str, Mapping[ObjectKey, Any]] = field(default_factory=dict)  # by kind
    build_pods: Mapping[ObjectKey, Any] = field(default_factory=dict)  # keyed by (namespace, job name)
    server_pods: Mapping[ObjectKey, Any] = field(default_factory=dict)  # troubles by (namespace, NimService)
    ready_engines: Mapping[tuple[str, str, str], Any] = field(default_factory=dict)  # (ns, claim, key)
    tunings: Mapping[tuple[str, str], Any] = field(default_factory=dict)  # (ns, tuning key)
    unit_children_by_kind: Mapping[str, Mapping[ObjectKey, Any]] = field(default_factory=dict)
    #: The model images (by spec uri) the reconcile at hand resolved: not a watch, the registry's answer.
    model_images: Mapping[str, Any] = field(default_factory=dict)
    #: What the reconcile at hand asked of a canary's units (rollout_analyst.py): not a watch either.
    rollout_gate: AnswerGateStatus | None = None
    rollout_figures: Figures | None = None

    @classmethod
    def from_indexes(cls, indexes: Mapping[str, Any]) -> Observed:
        return cls(
            children={child.kind: indexes[child.index] for child in CHILD_KINDS},
            build_pods=indexes[Index.BUILD_PODS],
            server_pods=indexes[Index.SERVER_PODS],
            ready_engines=indexes[Index.READY_ENGINES],
            tunings=indexes[Index.TUNINGS],
            unit_children_by_kind={
                child.kind: indexes[child.unit_index] for child in CHILD_KINDS if child.unit_index is not None
            },
        )

    def get(self, kind: str, namespace: str, name: str) -> Body | None:
        index = self.children.get(kind)
        found: Body | None = None if index is None else first(index, (namespace, name))
        return found

    def build_pod(self, namespace: str, job_name: str) -> Body | None:
        """The newest pod of a conversion Job."""
        store = self.build_pods.get((namespace, job_name))
        pods = list(store) if store is not None else []
        return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)

    def pod_trouble(self, namespace: str, nimservice: str, besides: str | None = None) -> PodTrouble | None:
        """What is wrong with the NimService's Triton pods, if anything; `besides`: leaving out the pods of
        that Deployment (a rollout's candidate, judged apart)."""
        store = self.server_pods.get((namespace, nimservice))
        return worst_trouble(t for t in store or () if besides is None or not deployment_pod(besides, t.pod))

    def unit_pod_trouble(self, namespace: str, nimservice: str, deployment: str) -> PodTrouble | None:
        """What is wrong with the Triton pods of one of the NimService's units (its Deployment's pods)."""
        store = self.server_pods.get((namespace, nimservice))
        return worst_trouble(t for t in store or () if deployment_pod(deployment, t.pod))

    def unit_children(self, kind: str, namespace: str, nimservice: str) -> set[str]:
        """Names of the NimService's children of a unit-scoped kind (its units' Deployments or configs)."""
        store = self.unit_children_by_kind.get(kind, {}).get((namespace, nimservice))
        return set(store) if store is not None else set()

    def tuning(self, namespace: str, key: str, *, besides: str) -> TuningStatus | None:
        """A tuning recorded under `key` by a NimService other than `besides`."""
        store = self.tunings.get((namespace, key))
        for recorded in store if store is not None else ():
            if recorded.recorded_by != besides:
                found: TuningStatus = recorded.tuning
                return found
        return None

    def ready_engine(
        self, namespace: str, claim: str, cache_key: str, *, besides: str
    ) -> EngineRecord | None:
        """A ready engine served by a NimService other than `besides`."""
        store = self.ready_engines.get((namespace, claim, cache_key))
        for ready in store if store is not None else ():
            if ready.served_by != besides:
                record: EngineRecord = ready.record
                return record
        return None
