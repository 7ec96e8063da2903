"""An OpenAPI 3.1 document of a model's KServe v2 (Triton HTTP) endpoints, typed by its signature.

Shapes are the ones clients send and receive: with batching the leading batch dimension is explicit, and a
tensor Triton declares as [1] (a scalar) is [1] on the wire too.

Tensor names are anything an exporter writes (`scope/output.tmp_0`, `input:0`, `past_key_values.0.key`), but
component names must match `^[a-zA-Z0-9._-]+$`, and a `$ref` is a JSON pointer inside a URI. So each tensor's
component name is its name with every other character replaced by `_` (numbered when two names collide), and
references are built by one function that escapes them as RFC 6901 and RFC 3986 require.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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


def openapi_document(
    name: str, signature: Signature, *, max_batch_size: int, version: str = "1"
) -> dict[str, Any]:
    batched = max_batch_size > 0
    taken = {"Parameters", "RequestedOutput", "InferRequest", "InferResponse", "Error"}
    input_names = component_names("Input", (t.name for t in signature.inputs), taken)
    output_names = component_names("Output", (t.name for t in signature.outputs), taken)
    inputs = {input_names[t.name]: _tensor_schema(t, batched, with_data=True) for t in signature.inputs}
    outputs = {output_names[t.name]: _tensor_schema(t, batched, with_data=True) for t in signature.outputs}
    schemas: dict[str, Any] = {
        "Parameters": {"type": "object", "additionalProperties": True},
        **inputs,
        **outputs,
        "RequestedOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "enum": [t.name for t in signature.outputs]},
                "parameters": {"$ref": schema_ref("Parameters")},
            },
        },
        "InferRequest": {
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
                "outputs": {"type": "array", "items": {"$ref": schema_ref("RequestedOutput")}},
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string", "const": name},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"$ref": schema_ref("Parameters")},
                "outputs": {
                    "type": "array",
                    "items": {"oneOf": [{"$ref": schema_ref(key)} for key in outputs]},
                },
            },
        },
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    }
    path_name = quote(name, safe="")  # a path segment: a `/` in a model name must not split it
    batching_note = (
        f"Triton batches this model: dimension 0 is the batch, up to {max_batch_size} per request."
        if batched
        else "Triton does not batch this model: every shape is the model's own."
    )

    def simple(summary: str) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "responses": {"200": {"description": "Yes"}, "400": {"description": "No"}},
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{name} (KServe v2 inference protocol)",
            "version": version,
            "description": f"Inference endpoints Triton serves for model '{name}'. {batching_note}",
        },
        "paths": {
            "/v2/health/live": simple("Server is live"),
            "/v2/health/ready": simple("Server is ready"),
            f"/v2/models/{path_name}/ready": simple("Model is ready"),
            f"/v2/models/{path_name}": {
                "get": {
                    "summary": "Model metadata",
                    "responses": {"200": {"description": "Name, versions, inputs and outputs"}},
                }
            },
            f"/v2/models/{path_name}/infer": {
                "post": {
                    "summary": f"Run {name}",
                    "operationId": "infer",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": schema_ref("InferRequest")}}},
                    },
                    "responses": {
                        "200": {
                            "description": "Outputs",
                            "content": {
                                "application/json": {"schema": {"$ref": schema_ref("InferResponse")}}
                            },
                        },
                        "400": {
                            "description": "Bad request",
                            "content": {"application/json": {"schema": {"$ref": schema_ref("Error")}}},
                        },
                    },
                }
            },
        },
        "components": {"schemas": schemas},
    }
