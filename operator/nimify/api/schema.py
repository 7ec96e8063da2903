"""Turns a pydantic model's JSON Schema into the structural OpenAPI v3 schema a CRD needs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

# Keys in the order a reader of the generated YAML wants them; anything else follows alphabetically.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-validations",
)
# JSON Schema keywords a CRD either refuses or has no use for.
_DROPPED = frozenset({"title", "examples", "$schema", "discriminator", "propertyNames"})


class SchemaError(ValueError):
    """The model cannot be expressed as a structural schema."""


class _CrdJsonSchema(GenerateJsonSchema):
    """Reports defaults made by a default_factory too, so the apiserver fills them in.

    A nested object's default is written out in full rather than as `{}`: the apiserver checks a default
    against the CEL rules without applying the nested defaults first.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                return value.model_dump(mode="json", by_alias=True, exclude_none=True)
            return value
        return super().get_default_value(schema)

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if json_schema.get("default") is None:
            json_schema.pop("default", None)
        return json_schema


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema with $refs inlined, optionals without null, and Kubernetes' own extensions."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_CrdJsonSchema)
    definitions = raw.pop("$defs", {})
    return _structural(raw, definitions, "")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A referenced or unioned schema under the field's own keys: the field's description and default win."""
    return {**base, **override}


def _structural(node: dict[str, Any], definitions: dict[str, Any], path: str) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
        node = _merge(target, node)
    if "allOf" in node:
        (only,) = node.pop("allOf")
        node = _merge(_structural(only, definitions, path), node)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [branch for branch in node.pop("anyOf") if branch != {"type": "null"}]
        if len(branches) != 1:
            raise SchemaError(f"{path or '<root>'}: a union of {len(branches)} types is not structural")
        node = _merge(_structural(branches[0], definitions, path), node)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[inclusive] = node[bound]
            node[bound] = True
    extra = node.get("additionalProperties")
    if extra is False:
        del node["additionalProperties"]
    elif extra is True or (node.get("type") == "object" and "properties" not in node and extra is None):
        node.pop("additionalProperties", None)
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(extra, dict):
        node["additionalProperties"] = _structural(extra, definitions, f"{path}.*")
    if "properties" in node:
        node["properties"] = {
            name: _structural(child, definitions, f"{path}.{name}")
            for name, child in node["properties"].items()
        }
    if "items" in node:
        node["items"] = _structural(node["items"], definitions, f"{path}[*]")
    if "description" in node:
        node["description"] = " ".join(node["description"].split())
    if "x-kubernetes-validations" in node:
        node["x-kubernetes-validations"] = [_ordered_rule(rule) for rule in node["x-kubernetes-validations"]]
    for key in _DROPPED & node.keys():
        del node[key]
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        raise SchemaError(f"{path or '<root>'}: no type")
    return _ordered(node)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    rank = {key: index for index, key in enumerate(_KEY_ORDER)}
    return {key: node[key] for key in sorted(node, key=lambda key: (rank.get(key, len(rank)), key))}


def _ordered_rule(rule: dict[str, Any]) -> dict[str, Any]:
    order = ("rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf")
    return {key: rule[key] for key in order if key in rule}


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every node of a structural schema with its path (`.spec.engine`, `.spec.engine.profiles[*]`)."""
    nodes = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        nodes += walk(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        nodes += walk(schema["items"], f"{path}[*]")
    return nodes
