"""The Markdown field reference of NimService (docs/api.md), written from the same schema as the CRD."""

from __future__ import annotations

import json
from typing import Any

from nimify.api.crd import PRINTER_COLUMNS, REGENERATE_COMMAND, SCALE_SUBRESOURCE, nimservice_schema
from nimify.api.nimservice import API_VERSION, CATEGORIES, CRD_NAME, KIND, SHORT_NAMES
from nimify.api.releases import TENSORRT_MAJOR_SINCE, TRTLLM_TENSORRT, TRTLLM_VARIANT, release_label


def render_reference() -> str:
    """docs/api.md."""
    schema = nimservice_schema()
    lines = [
        f"# {KIND} API reference ({API_VERSION})",
        "",
        f"<!-- Generated from operator/nimify/api by `{REGENERATE_COMMAND}`; do not edit. -->",
        "",
        *_overview(),
    ]
    for name in ("spec", "status"):
        lines += _sections(schema["properties"][name], name)
    return "\n".join(lines).rstrip("\n") + "\n"


def _overview() -> list[str]:
    columns = [
        f"| {column['name']} | `{column['jsonPath']}` | {'wide' if column.get('priority') else 'default'} |"
        for column in PRINTER_COLUMNS
    ]
    releases = [
        f"| {release_label(since)} | {major} |" for since, major in TENSORRT_MAJOR_SINCE if major >= 10
    ]
    trtllm: list[tuple[str, str, str]] = []  # first release, last release, TensorRT version
    for release, version in sorted(TRTLLM_TENSORRT.items()):
        if trtllm and trtllm[-1][2] == version:
            trtllm[-1] = (trtllm[-1][0], release_label(release), version)
        else:
            trtllm.append((release_label(release), release_label(release), version))
    trtllm_rows = [
        f"| {first if first == last else f'{first} to {last}'} | {version} |"
        for first, last, version in trtllm
    ]
    return [
        f"CustomResourceDefinition `{CRD_NAME}`, namespaced. Short name {_code_list(SHORT_NAMES)}, category"
        f" {_code_list(CATEGORIES)} (`kubectl get {CATEGORIES[0]}`).",
        "",
        "The apiserver fills in every default listed below when an object is created, and refuses objects"
        " that break a rule, naming the field. `nimify` checks the same rules offline; checks that need"
        " tables (the TensorRT a Triton release ships, what a GPU product computes) run in the operator,"
        " which reports them as a `Stalled` condition with reason `InvalidSpec`.",
        "",
        "Subresources: `status`, and `scale` ("
        + ", ".join(f"{key} `{value}`" for key, value in SCALE_SUBRESOURCE.items())
        + "), so `kubectl scale nimservice/NAME --replicas=N` sets `spec.replicas` when autoscaling is off.",
        "",
        "## Columns of `kubectl get nimservices`",
        "",
        "| Column | From | Shown |",
        "|---|---|---|",
        *columns,
        "",
        "## TensorRT by Triton release",
        "",
        "The tag of `spec.triton.image` starts with a release (`YY.MM`); it decides the TensorRT that builds"
        " and runs the engine. TensorRT 11 builds strongly typed networks only: `precision` fp16, bf16, int8"
        " and fp8 need TensorRT 10.",
        "",
        "| Triton release from | TensorRT |",
        "|---|---|",
        *releases,
        "",
        f"The TensorRT-LLM images (`YY.MM-{TRTLLM_VARIANT}`) ship the TensorRT of their TensorRT-LLM release"
        " instead, which lags behind; a release outside this table, or another image variant than `py3`,"
        f" `py3-min` and `{TRTLLM_VARIANT}`, is refused for the tensorrt backend (its TensorRT is unknown).",
        "",
        "| TensorRT-LLM image release | TensorRT |",
        "|---|---|",
        *trtllm_rows,
        "",
    ]


def _code_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"`{value}`" for value in values)


def _sections(node: dict[str, Any], path: str) -> list[str]:
    lines = [f"## `{path}`", "", node.get("description", ""), ""]
    properties: dict[str, Any] = node.get("properties", {})
    nested: list[tuple[dict[str, Any], str]] = []
    if properties:
        lines += ["| Field | Type | Default | Description |", "|---|---|---|---|"]
        required = set(node.get("required", []))
        for name, child in properties.items():
            child_path = f"{path}.{name}"
            object_node, object_path = _object_of(child, child_path)
            if object_node is not None:
                nested.append((object_node, object_path))
            default = "required" if name in required else _default(child)
            description = _escape(child.get("description", ""))
            if constraints := _constraints(child):
                description += f" <br>*{constraints}*"
            lines.append(f"| `{name}` | {_type(child, object_path)} | {default} | {description} |")
        lines.append("")
    rules = node.get("x-kubernetes-validations", [])
    if rules:
        lines += ["Rules:", ""]
        for rule in rules:
            where = f"{path}{rule.get('fieldPath', '')}"
            when = " (on update)" if "oldSelf" in rule["rule"] else ""
            lines.append(f"- `{where}`{when}: {_escape(rule['message'])}")
        lines.append("")
    for object_node, object_path in nested:
        lines += _sections(object_node, object_path)
    return lines


def _object_of(node: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, str]:
    """The object with its own section that a field holds (directly or as list items), if any."""
    if node.get("type") == "object" and "properties" in node:
        return node, path
    items = node.get("items", {})
    if node.get("type") == "array" and items.get("type") == "object" and "properties" in items:
        return items, f"{path}[]"
    return None, path


def _anchor(path: str) -> str:
    return "#" + "".join(character for character in path.lower() if character.isalnum() or character in "-_")


def _type(node: dict[str, Any], section: str) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity"
    kind = node.get("type")
    if kind == "object":
        if "properties" in node:
            return f"[object]({_anchor(section)})"
        if isinstance(node.get("additionalProperties"), dict):
            return f"map of {node['additionalProperties'].get('type', 'object')}"
        return "object (free-form)"
    if kind == "array":
        items = node.get("items", {})
        if items.get("type") == "object" and "properties" in items:
            return f"list of [object]({_anchor(section)})"
        return f"list of {items.get('type', 'object')}"
    return f"{kind} ({node['format']})" if "format" in node else str(kind)


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if isinstance(value, dict):
        return "its fields' defaults"
    return f"`{value}`" if isinstance(value, str) and value else f"`{json.dumps(value)}`"


def _constraints(node: dict[str, Any]) -> str:
    found = []
    if "enum" in node:
        found.append("one of " + ", ".join(f"`{value}`" for value in node["enum"]))
    if bounds := _range(node):
        found.append(bounds)
    if bounds := _range(node.get("items", {})):
        found.append(f"each {bounds}")
    if "maxLength" in node:
        found.append(f"at most {node['maxLength']} characters")
    if "maxItems" in node:
        found.append(f"at most {node['maxItems']} items")
    if "maxProperties" in node:
        found.append(f"at most {node['maxProperties']} entries")
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        found.append("distinct values")
    elif list_type == "map":
        found.append("one item per " + ", ".join(f"`{key}`" for key in node["x-kubernetes-list-map-keys"]))
    return "; ".join(found)


def _range(node: dict[str, Any]) -> str:
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}" if high is not None else ""


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
