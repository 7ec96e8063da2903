"""The NimService CustomResourceDefinition, generated from the pydantic models."""

from __future__ import annotations

from typing import Any

import yaml

from nimify.api.nimservice import (
    CATEGORIES,
    CRD_NAME,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    NimService,
)
from nimify.api.schema import structural_schema

CRD_FILENAME = f"{GROUP}_{PLURAL}.yaml"
REGENERATE_COMMAND = "nimify crd --output crds/ --docs docs/api.md"

_READY = '.status.conditions[?(@.type=="Ready")]'
PRINTER_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Ready", "type": "string", "jsonPath": f"{_READY}.status", "description": "Ready condition"},
    {"name": "Reason", "type": "string", "jsonPath": f"{_READY}.reason", "description": "Why Ready is so"},
    {
        "name": "Ready-Replicas",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Replicas whose Triton reports the model ready",
    },
    {
        "name": "Replicas",
        "type": "integer",
        "jsonPath": ".status.replicas",
        "description": "Replicas that exist",
    },
    {
        "name": "Model",
        "type": "string",
        "jsonPath": ".spec.model.uri",
        "description": "Where the model comes from",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Backend",
        "type": "string",
        "jsonPath": ".spec.engine.backend",
        "description": "Triton backend",
        "priority": 1,
    },
    {
        "name": "GPU",
        "type": "string",
        "jsonPath": ".spec.resources.gpuProduct",
        "description": "GPU product",
        "priority": 1,
    },
    {
        "name": "Precision",
        "type": "string",
        "jsonPath": ".spec.engine.precision",
        "description": "Engine precision",
        "priority": 1,
    },
    {
        "name": "Rollout",
        "type": "string",
        "jsonPath": ".status.rollout.phase",
        "description": "The last canary rollout's phase",
        "priority": 1,
    },
    {
        "name": "Canary",
        "type": "integer",
        "jsonPath": ".status.rollout.candidateWeight",
        "description": "Percent of the requests the rollout's candidate gets",
        "priority": 1,
    },
    {
        "name": "Desired",
        "type": "integer",
        "jsonPath": ".status.autoscaler.desiredReplicas",
        "description": "Replicas the autoscaler asks for",
        "priority": 1,
    },
    {
        "name": "Scaling",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="ScalingActive")].reason',
        "description": "Whether the autoscaler gets its metrics (ScalingActive reason)",
        "priority": 1,
    },
)
SCALE_SUBRESOURCE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}


def nimservice_schema() -> dict[str, Any]:
    """The openAPIV3Schema of NimService."""
    schema = structural_schema(NimService)
    properties = schema["properties"]
    # A CRD declares only the shape of apiVersion, kind and metadata; the apiserver owns their content.
    properties["apiVersion"] = {
        "description": "APIVersion defines the versioned schema of this representation of an object.",
        "type": "string",
    }
    properties["kind"] = {
        "description": "Kind is a string value representing the REST resource this object represents.",
        "type": "string",
    }
    # The apiserver refuses anything but the type here, even a description.
    properties["metadata"] = {"type": "object"}
    return schema


def nimservice_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of NimService, ready to apply."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "nimify", "app.kubernetes.io/part-of": "nimify"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": nimservice_schema()},
                    "subresources": {"status": {}, "scale": dict(SCALE_SUBRESOURCE)},
                    "additionalPrinterColumns": [dict(column) for column in PRINTER_COLUMNS],
                }
            ],
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated sub-schemas out in full: anchors and aliases would puzzle readers and some tools."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_crd() -> str:
    """The CRD as the YAML kept in crds/."""
    header = f"# Generated from operator/nimify/api by `{REGENERATE_COMMAND}`; do not edit.\n"
    body = yaml.dump(nimservice_crd(), Dumper=_PlainDumper, sort_keys=False, width=110, allow_unicode=True)
    return header + body
