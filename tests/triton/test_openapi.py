"""The OpenAPI document of a model's KServe v2 endpoints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from onnx import TensorProto, helper
from openapi_spec_validator import validate

from nimify.model.inspection import inspect_model
from nimify.model.samples import SAMPLES, write_model, write_sample
from nimify.triton.openapi import openapi_document, schema_ref, wire_shape


def test_batched_model(tmp_path: Path) -> None:
    report = inspect_model(write_sample("int_bool", tmp_path))
    document = openapi_document("tokens", report.signature, max_batch_size=8)
    assert document["openapi"] == "3.1.0"
    assert "/v2/models/tokens/infer" in document["paths"]
    schemas = document["components"]["schemas"]
    token_ids = schemas["Input_token_ids"]["properties"]
    assert token_ids["datatype"] == {"type": "string", "const": "INT64"}
    assert token_ids["shape"]["minItems"] == token_ids["shape"]["maxItems"] == 2
    assert token_ids["shape"]["prefixItems"][0]["description"] == "batch size"
    assert token_ids["shape"]["prefixItems"][1]["description"] == "dynamic 'seq'"
    assert schemas["Input_mask"]["properties"]["data"]["items"]["anyOf"][0] == {"type": "boolean"}
    # A [batch] output travels as [batch, 1]: the config declares dims [1] with a reshape.
    total = schemas["Output_total"]["properties"]["shape"]
    assert total["prefixItems"][1] == {"type": "integer", "const": 1}
    request = schemas["InferRequest"]["properties"]["inputs"]
    assert request["minItems"] == 2
    assert {ref["$ref"] for ref in request["items"]["oneOf"]} == {
        "#/components/schemas/Input_token_ids",
        "#/components/schemas/Input_mask",
    }
    assert "up to 8" in document["info"]["description"]


def test_unbatched_model_uses_full_shapes(tmp_path: Path) -> None:
    report = inspect_model(write_sample("recurrent", tmp_path))
    state, temperature = report.signature.inputs[1], report.signature.inputs[2]
    assert wire_shape(state, batched=False) == [2, -1, 16]
    assert wire_shape(temperature, batched=False) == [1]
    document = openapi_document("rnn", report.signature, max_batch_size=0)
    shape = document["components"]["schemas"]["Input_state"]["properties"]["shape"]
    assert shape["prefixItems"][0] == {"type": "integer", "const": 2}
    assert shape["prefixItems"][1]["description"] == "dynamic 'batch'"
    assert "does not batch" in document["info"]["description"]


def _model_with_names(tmp_path: Path, names: list[str]) -> Path:
    """Identity over several tensors whose names exporters really write (Paddle, TensorFlow, ONNX Runtime)."""
    nodes = [helper.make_node("Identity", [name], [f"{name}/out"]) for name in names]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [-1, 3]) for name in names]
    outputs = [helper.make_tensor_value_info(f"{name}/out", TensorProto.FLOAT, [-1, 3]) for name in names]
    graph = helper.make_graph(nodes, "names", inputs, outputs)
    return write_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "n.onnx"
    )


NAMES = ["scope/output.tmp_0", "input:0", "a~b", "with space", "naïve", "scope_output.tmp_0", "Parameters"]


def test_any_tensor_name_gives_a_valid_document(tmp_path: Path) -> None:
    report = inspect_model(_model_with_names(tmp_path, NAMES))
    document = openapi_document("paddle/model", report.signature, max_batch_size=0)
    validate(document)  # openapi-spec-validator: names, pointers, the whole 3.1 document
    schemas = document["components"]["schemas"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", key) for key in schemas)
    # Two names that sanitize alike stay apart; the titles keep the real names.
    assert schemas["Input_scope_output.tmp_0"]["title"] == "scope/output.tmp_0"
    assert schemas["Input_scope_output.tmp_0_2"]["title"] == "scope_output.tmp_0"
    assert schemas["Input_scope_output.tmp_0"]["properties"]["name"]["const"] == "scope/output.tmp_0"
    refs = {ref["$ref"] for ref in schemas["InferRequest"]["properties"]["inputs"]["items"]["oneOf"]}
    assert len(refs) == len(NAMES)
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)
    assert "/v2/models/paddle%2Fmodel/infer" in document["paths"]


def test_schema_ref_escapes_json_pointers() -> None:
    assert schema_ref("a/b~c") == "#/components/schemas/a~1b~0c"
    assert schema_ref("x y") == "#/components/schemas/x%20y"


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("max_batch_size", [0, 8])
def test_sample_documents_validate(tmp_path: Path, name: str, max_batch_size: int) -> None:
    report = inspect_model(write_sample(name, tmp_path))
    batch = max_batch_size if report.batching.batched else 0
    validate(openapi_document(name, report.signature, max_batch_size=batch))
