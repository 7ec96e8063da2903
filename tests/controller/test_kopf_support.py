"""The kopf internals nimify patches (controller/kopf_namespaces.py, kopf_resources.py, kopf_watchers.py) are
the ones the patches were written for. A kopf release that changes them fails here, before a cluster shows it:
read the new code, adapt the patch, then record the new hashes (and widen the pin in pyproject.toml)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
from collections.abc import Callable
from typing import Any

from kopf._core.reactor import observation, orchestration

from nimify.controller import kopf_namespaces, kopf_resources, kopf_watchers

#: Where each patch hooks in: kopf's processors it replaces, the observers that look them up by their module
#: name when they start, and the function the resource patch calls as kopf's processor does.
WRITTEN_FOR: dict[str, tuple[Callable[..., Any], str]] = {
    "process_discovered_namespace_event": (kopf_namespaces._KOPF_PROCESSOR, "eb0d00472eb194e2"),
    "process_discovered_resource_event": (kopf_resources._KOPF_PROCESSOR, "77f50edd53c15698"),
    "namespace_observer": (observation.namespace_observer, "51476dca38818a43"),
    "resource_observer": (observation.resource_observer, "c6b5f7f986d0b482"),
    "revise_resources": (observation.revise_resources, "303335a99910b07a"),
    # The watcher whose readiness toggle the watcher patch drops, who makes the toggle, who stops watchers.
    "watcher": (kopf_watchers._KOPF_WATCHER, "16656c04aad54718"),
    "spawn_missing_watchers": (orchestration.spawn_missing_watchers, "9a331abda3f16623"),
    "terminate_redundancies": (orchestration.terminate_redundancies, "71f28ee1c761e4bb"),
}


def test_kopf_is_a_release_the_patches_were_written_for() -> None:
    version = importlib.metadata.version("kopf")
    assert version.startswith("1.45."), f"kopf {version}: the patches were written for 1.45"


def test_the_patched_kopf_functions_are_the_ones_the_patches_were_written_for() -> None:
    changed = {
        name: digest
        for name, (function, expected) in WRITTEN_FOR.items()
        if (digest := hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]) != expected
    }
    assert changed == {}, f"kopf changed what nimify patches: {changed}"
