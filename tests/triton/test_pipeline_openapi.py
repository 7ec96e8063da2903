"""The OpenAPI document of a pipeline: the ensemble's endpoints and each member's, in one valid document."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from nimify.model.inspection import inspect_model
from nimify.triton.ensemble import Member, plan_ensemble
from nimify.triton.openapi import ServedModel, pipeline_openapi_document
from tests.pipelines import ExportedPipeline, export_chain, export_fan


def _document(exported: ExportedPipeline) -> dict[str, Any]:
    members = {
        name: Member(inspect_model(path).signature, exported.max_batch_size)
        for name, path in exported.models.items()
    }
    ensemble = plan_ensemble(exported.name, exported.pipeline, members)
    return pipeline_openapi_document(
        ServedModel(ensemble.name, ensemble.signature, ensemble.max_batch_size),
        [ServedModel(name, m.signature, m.max_batch_size) for name, m in members.items()],
    )


@pytest.mark.parametrize("export", [export_chain, export_fan])
def test_pipeline_documents_validate(tmp_path: Path, export: Any) -> None:
    exported: ExportedPipeline = export(tmp_path)
    document = _document(exported)
    validate(document)  # openapi-spec-validator: names, pointers, the whole 3.1 document
    schemas = document["components"]["schemas"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", key) for key in schemas)
    operations = [
        op["operationId"]
        for path in document["paths"].values()
        for op in path.values()
        if "operationId" in op
    ]
    assert operations == ["infer", *(f"{name}.infer" for name in exported.models)]
    # The pipeline's tensors are the ensemble's: its inputs by name, its outputs as the spec names them.
    pipeline = exported.pipeline
    assert schemas["InferRequest"]["properties"]["inputs"]["minItems"] == len(pipeline.input_names)
    assert schemas["RequestedOutput"]["properties"]["name"]["enum"] == [o.name for o in pipeline.outputs]
    for name in exported.models:
        assert f"/v2/models/{name}/infer" in document["paths"]
        assert schemas[f"{name}.InferResponse"]["properties"]["model_name"]["const"] == name


def test_a_batching_pipeline_says_so_for_each_model(tmp_path: Path) -> None:
    document = _document(export_chain(tmp_path))
    assert "up to 4 per request" in document["info"]["description"]
    member = document["paths"]["/v2/models/pca/infer"]["post"]
    assert member["description"] == "Triton batches pca: dimension 0 is the batch, up to 4 per request."
    probabilities = document["components"]["schemas"]["Output_probabilities"]["properties"]["shape"]
    assert probabilities["prefixItems"] == [
        {"type": "integer", "minimum": 0, "description": "batch size"},
        {"type": "integer", "const": 3},
    ]
