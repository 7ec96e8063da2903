"""The generated CRD: structural, described, bounded for CEL, and identical to what crds/ holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nimify.api.crd import CRD_FILENAME, nimservice_crd, nimservice_schema, render_crd
from nimify.api.docs import render_reference
from nimify.api.schema import walk
from nimify.cli import _register_commands, app

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = nimservice_schema()
NODES = walk(SCHEMA)


def _is_scalar_item(path: str, node: dict[str, Any]) -> bool:
    return (path.endswith("[*]") or path.endswith(".*")) and node.get("type") != "object"


def test_crds_directory_matches_the_generator() -> None:
    kept = (REPO_ROOT / "crds" / CRD_FILENAME).read_text()
    assert kept == render_crd(), f"crds/{CRD_FILENAME} is stale: run `bash hack/generate.sh`"


def test_api_reference_matches_the_generator() -> None:
    kept = (REPO_ROOT / "docs" / "api.md").read_text()
    assert kept == render_reference(), "docs/api.md is stale: run `bash hack/generate.sh`"


def test_output_is_deterministic() -> None:
    assert render_crd() == render_crd()
    assert render_reference() == render_reference()


def test_every_field_has_a_description() -> None:
    # metadata is the exception: a CRD may only give its type.
    undescribed = [
        path
        for path, node in NODES
        if not _is_scalar_item(path, node) and not node.get("description") and path != ".metadata"
    ]
    assert undescribed == []


def test_schema_is_structural() -> None:
    for path, node in NODES:
        assert "$ref" not in node and "allOf" not in node and "oneOf" not in node and "const" not in node, (
            path
        )
        assert "title" not in node and "nullable" not in node, path
        assert node.get("additionalProperties") is not False, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "type" in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert {"type": "null"} not in node.get("anyOf", []), path


def test_lists_strings_and_maps_are_bounded_for_cel_cost_estimation() -> None:
    for path, node in NODES:
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if (
            node.get("type") == "string"
            and not path.startswith((".apiVersion", ".kind"))
            and "enum" not in node
        ):
            assert "maxLength" in node or "format" in node, path
        if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node, path


def test_every_rule_says_why_and_where() -> None:
    rules = [(path, rule) for path, node in NODES for rule in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 25
    for path, rule in rules:
        assert rule.get("message") or rule.get("messageExpression"), path
        # FieldValueDuplicate would make the apiserver drop the message.
        assert rule["reason"] in {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"}, path
        if "fieldPath" in rule:
            target = f"{path}{rule['fieldPath']}"
            assert any(candidate == target for candidate, _ in NODES), (
                f"{path}: fieldPath {rule['fieldPath']}"
            )


def test_immutable_storage_fields_use_old_self() -> None:
    storage = SCHEMA["properties"]["spec"]["properties"]["storage"]
    immutable = {
        rule["fieldPath"] for rule in storage["x-kubernetes-validations"] if "oldSelf" in rule["rule"]
    }
    assert immutable == {".existingClaim", ".storageClassName"}


@pytest.mark.parametrize(
    ("path", "default"),
    [
        (
            ".spec.engine",
            {
                "backend": "tensorrt",
                "precision": "auto",
                "parity": {"atol": 0.001, "rtol": 0.001, "samples": 8},
                "buildTimeoutSeconds": 1800,
            },
        ),
        (".spec.engine.backend", "tensorrt"),
        (".spec.engine.precision", "auto"),
        (".spec.engine.parity.atol", 0.001),
        (".spec.triton.image", "nvcr.io/nvidia/tritonserver:25.10-py3"),
        (".spec.resources.gpus", 1),
        (".spec.expose.httpPort", 8000),
        (".spec.expose.grpcPort", 8001),
        (".spec.expose.metricsPort", 8002),
        (".spec.expose.serviceType", "ClusterIP"),
        (".spec.paused", False),
    ],
)
def test_defaults_are_in_the_schema(path: str, default: Any) -> None:
    assert dict(NODES)[path]["default"] == default


def test_optional_fields_have_no_null_default() -> None:
    assert all(node.get("default", "") is not None for _, node in NODES)
    assert "default" not in dict(NODES)[".spec.replicas"]


def test_list_semantics() -> None:
    nodes = dict(NODES)
    assert nodes[".spec.engine.profiles"]["x-kubernetes-list-map-keys"] == ["input"]
    assert nodes[".status.conditions"]["x-kubernetes-list-type"] == "map"
    assert nodes[".status.conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert nodes[".spec.triton.dynamicBatching.preferredBatchSizes"]["x-kubernetes-list-type"] == "set"


def test_affinity_is_kept_free_form() -> None:
    assert dict(NODES)[".spec.placement.affinity"] == {
        "description": dict(NODES)[".spec.placement.affinity"]["description"],
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }


def test_crd_names_subresources_and_columns() -> None:
    crd = nimservice_crd()
    assert crd["metadata"]["name"] == "nimservices.nimify.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("NimService", "nimservices", ["nimsvc"])
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["storage"] and version["served"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert {name for name, column in columns.items() if column.get("priority") == 1} == {
        "Backend",
        "GPU",
        "Precision",
        "Rollout",
        "Canary",
        "Desired",
        "Scaling",
    }


def test_metadata_only_declares_its_type() -> None:
    assert SCHEMA["properties"]["metadata"]["type"] == "object"
    assert SCHEMA["properties"]["metadata"] == {"type": "object"}


def test_cli_prints_the_crd() -> None:
    _register_commands()
    result = CliRunner().invoke(app, ["crd"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == nimservice_crd()


def test_cli_writes_crd_and_reference(tmp_path: Path) -> None:
    _register_commands()
    result = CliRunner().invoke(
        app, ["crd", "--output", str(tmp_path / "crds"), "--docs", str(tmp_path / "api.md")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "crds" / CRD_FILENAME).read_text() == render_crd()
    assert (tmp_path / "api.md").read_text() == render_reference()
