"""An OpenAPI 3.1 document of a model's KServe v2 (Triton HTTP) endpoints, typed by its signature.

Shapes are the ones clients send and receive: with batching the leading batch dimension is explicit, and a
tensor Triton declares as [1] (a scalar) is [1] on the wire too.

Tensor names are anything an exporter writes (`scope/output.tmp_0`, `input:0`, `past_key_values.0.key`), but
component names must match `^[a-zA-Z0-9._-]+$`, and a `$ref` is a JSON pointer inside a URI. So each tensor's
component name is its name with every other character replaced by `_` (numbered when two names collide), and
references are built by one function that escapes them as RFC 6901 and RFC 3986 require.

A pipeline's document holds the ensemble's endpoints (named as a single model's would be) and each member's,
whose components are prefixed with the member's name and a dot: member names are DNS labels, so they never
meet the ensemble's `Input_`/`Output_` names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from nimify.model.dtypes import by_name
from nimify.model.signature import Signature, TensorInfo
from nimify.triton.model_config import config_dims

_JSON_TYPES = {"BOOL": "boolean", "STRING": "string"}
_NOT_IN_COMPONENT_NAMES = re.compile(r"[^A-Za-z0-9._-]")


def component_names(prefix: str, names: Iterable[str], taken: set[str]) -> dict[str, str]:
    """A valid, unique component name per tensor name: `prefix_` + the name with other characters as `_`."""
    chosen: dict[str, str] = {}
    for name in names:
        base = f"{prefix}_{_NOT_IN_COMPONENT_NAMES.sub('_', name)}"
        candidate, number = base, 2
        while candidate in taken:
            candidate, number = f"{base}_{number}", number + 1
        taken.add(candidate)
        chosen[name] = candidate
    return chosen


def schema_ref(component: str) -> str:
    """The `$ref` of a schema component: a JSON pointer (`~` and `/` escaped) in a URI fragment."""
    token = component.replace("~", "~0").replace("/", "~1")
    return "#/components/schemas/" + quote(token, safe="~._-")


def _element_type(dtype: str) -> str:
    if dtype in _JSON_TYPES:
        return _JSON_TYPES[dtype]
    return "number" if dtype in ("FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE") else "integer"


def wire_shape(tensor: TensorInfo, batched: bool) -> list[int]:
    dims, _ = config_dims(tensor, batched)
    return [-1, *dims] if batched else dims


def _dim_label(tensor: TensorInfo, index: int, batched: bool) -> str:
    # The wire shape lines up with the model's dims: with batching, [batch] + dims[1:].
    if batched and index == 0:
        return "batch size"
    if index < tensor.rank and isinstance(tensor.dims[index], str):
        return f"dynamic '{tensor.dims[index]}'"
    return "dynamic"


def _shape_schema(tensor: TensorInfo, batched: bool) -> dict[str, Any]:
    shape = wire_shape(tensor, batched)
    items = [
        {"type": "integer", "const": size}
        if size >= 0
        else {"type": "integer", "minimum": 0, "description": _dim_label(tensor, index, batched)}
        for index, size in enumerate(shape)
    ]
    return {
        "type": "array",
        "prefixItems": items,
        "items": False,
        "minItems": len(shape),
        "maxItems": len(shape),
    }


def _tensor_schema(tensor: TensorInfo, batched: bool, *, with_data: bool) -> dict[str, Any]:
    wire = by_name(tensor.dtype).kserve
    properties: dict[str, Any] = {
        "name": {"type": "string", "const": tensor.name},
        "shape": _shape_schema(tensor, batched),
        "datatype": {"type": "string", "const": wire},
        "parameters": {"$ref": schema_ref("Parameters")},
    }
    if with_data:
        properties["data"] = {
            "type": "array",
            "description": "Elements in row-major order (flattened), or nested arrays of the tensor's shape.",
            "items": {"anyOf": [{"type": _element_type(tensor.dtype)}, {"type": "array"}]},
        }
    return {
        "type": "object",
        "title": tensor.name,
        "description": f"{tensor.dtype} {tensor.describe_dims()} in the model",
        "required": ["name", "shape", "datatype", "data"],
        "properties": properties,
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class ServedModel:
    """A model as Triton serves it: its name, its signature and its max_batch_size (0: no batching)."""

    name: str
    signature: Signature
    max_batch_size: int

    @property
    def batching_note(self) -> str:
        if self.max_batch_size > 0:
            return (
                f"Triton batches {self.name}: dimension 0 is the batch, up to {self.max_batch_size} per"
                " request."
            )
        return f"Triton does not batch {self.name}: every shape is the model's own."


SHARED = ("Parameters", "Error")


def _model_schemas(model: ServedModel, prefix: str, taken: set[str]) -> dict[str, Any]:
    """The schemas of one model's requests and responses, each component name starting with `prefix`."""
    batched = model.max_batch_size > 0
    signature = model.signature
    request, response, requested = (
        f"{prefix}{n}" for n in ("InferRequest", "InferResponse", "RequestedOutput")
    )
    taken.update((request, response, requested))
    input_names = component_names(f"{prefix}Input", (t.name for t in signature.inputs), taken)
    output_names = component_names(f"{prefix}Output", (t.name for t in signature.outputs), taken)
    inputs = {input_names[t.name]: _tensor_schema(t, batched, with_data=True) for t in signature.inputs}
    outputs = {output_names[t.name]: _tensor_schema(t, batched, with_data=True) for t in signature.outputs}
    return {
        **inputs,
        **outputs,
        requested: {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "enum": [t.name for t in signature.outputs]},
                "parameters": {"$ref": schema_ref("Parameters")},
            },
        },
        request: {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"$ref": schema_ref("Parameters")},
                "inputs": {
                    "type": "array",
                    "minItems": len(signature.inputs),
                    "maxItems": len(signature.inputs),
                    "items": {"oneOf": [{"$ref": schema_ref(key)} for key in inputs]},
                },
                "outputs": {"type": "array", "items": {"$ref": schema_ref(requested)}},
            },
        },
        response: {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string", "const": model.name},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"$ref": schema_ref("Parameters")},
                "outputs": {
                    "type": "array",
                    "items": {"oneOf": [{"$ref": schema_ref(key)} for key in outputs]},
                },
            },
        },
    }


def _simple(summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": "Yes"}, "400": {"description": "No"}},
        }
    }


def _model_paths(model: ServedModel, prefix: str, operation_id: str, summary: str) -> dict[str, Any]:
    path_name = quote(model.name, safe="")  # a path segment: a `/` in a model name must not split it
    infer: dict[str, Any] = {
        "summary": summary,
        "operationId": operation_id,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": schema_ref(f"{prefix}InferRequest")}}},
        },
        "responses": {
            "200": {
                "description": "Outputs",
                "content": {"application/json": {"schema": {"$ref": schema_ref(f"{prefix}InferResponse")}}},
            },
            "400": {
                "description": "Bad request",
                "content": {"application/json": {"schema": {"$ref": schema_ref("Error")}}},
            },
        },
    }
    if prefix:
        infer["description"] = model.batching_note
    return {
        f"/v2/models/{path_name}/ready": _simple(f"{model.name} is ready"),
        f"/v2/models/{path_name}": {
            "get": {
                "summary": f"{model.name} metadata",
                "responses": {"200": {"description": "Name, versions, inputs and outputs"}},
            }
        },
        f"/v2/models/{path_name}/infer": {"post": infer},
    }


def _document(
    title: str, description: str, version: str, paths: dict[str, Any], schemas: dict[str, Any]
) -> dict[str, Any]:
    shared = {
        "Parameters": {"type": "object", "additionalProperties": True},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": {
            "/v2/health/live": _simple("Server is live"),
            "/v2/health/ready": _simple("Server is ready"),
            **paths,
        },
        "components": {"schemas": {**shared, **schemas}},
    }


def openapi_document(
    name: str, signature: Signature, *, max_batch_size: int, version: str = "1"
) -> dict[str, Any]:
    """The document of one model's endpoints."""
    model = ServedModel(name, signature, max_batch_size)
    schemas = _model_schemas(model, "", set(SHARED))
    paths = _model_paths(model, "", "infer", f"Run {name}")
    description = f"Inference endpoints Triton serves for model '{name}'. {model.batching_note}"
    return _document(f"{name} (KServe v2 inference protocol)", description, version, paths, schemas)


def pipeline_openapi_document(
    pipeline: ServedModel, members: Sequence[ServedModel], *, version: str = "1"
) -> dict[str, Any]:
    """The document of a pipeline's endpoints: the ensemble's (its components named as a single model's)
    and each member's, which Triton serves on its own too (components prefixed `MEMBER.`)."""
    taken = set(SHARED)
    schemas = _model_schemas(pipeline, "", taken)
    paths = _model_paths(pipeline, "", "infer", f"Run the pipeline {pipeline.name}")
    for member in members:
        prefix = f"{member.name}."
        schemas.update(_model_schemas(member, prefix, taken))
        paths.update(_model_paths(member, prefix, f"{prefix}infer", f"Run the member {member.name} alone"))
    names = ", ".join(m.name for m in members)
    description = (
        f"Inference endpoints Triton serves for pipeline '{pipeline.name}' (an ensemble of {names}), and for"
        f" each member under its own name. {pipeline.batching_note}"
    )
    return _document(
        f"{pipeline.name} pipeline (KServe v2 inference protocol)", description, version, paths, schemas
    )
