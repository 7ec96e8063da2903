"""The OpenAPI document of a model's KServe v2 endpoints."""

from __future__ import annotations

from pathlib import Path

from nimify.model.inspection import inspect_model
from nimify.model.samples import write_sample
from nimify.triton.openapi import openapi_document, wire_shape


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
