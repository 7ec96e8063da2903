"""A pipeline as a Triton ensemble: its config from the members' real signatures (models exported by
skl2onnx and a PyTorch export of the ONNX backend corpus), read back with Triton's own ModelConfig message,
and the check Job's code path end to end on the real tritonserver: the repository `prepare` writes (each
member's version folder linked from an engine layout), then `check` against the members chained in ONNX
Runtime, passing, and failing where an engine answers otherwise than its source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from nimify.api import TritonSpec
from nimify.engine.pipeline_check import check_served_pipeline, prepare_repository
from nimify.engine.pipeline_document import CheckDocument
from nimify.model.inspection import inspect_model
from nimify.triton.ensemble import Member, plan_ensemble, render_ensemble_config
from nimify.triton.local_server import LocalTriton
from nimify.triton.model_config import render_model_config
from nimify.triton.repository import write_model_directory
from tests.pipelines import ExportedPipeline, export_chain, export_fan, export_normalizer

TRITON = TritonSpec.model_validate({"dynamicBatching": {"maxQueueDelayMicroseconds": 100}})


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> ExportedPipeline:
    return export_chain(tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="module")
def fan(tmp_path_factory: pytest.TempPathFactory) -> ExportedPipeline:
    exported = export_fan(tmp_path_factory.mktemp("fan"))
    # The corpus model fixes the batch at 3, which the pipeline's input does not show: the check is told.
    spec = {**exported.spec, "parity": {"generated": [{"input": "features", "shape": [3, 4]}]}}
    return ExportedPipeline(exported.name, spec, exported.models, exported.batch)


def _members(exported: ExportedPipeline) -> dict[str, Member]:
    return {
        name: Member(inspect_model(path).signature, exported.max_batch_size)
        for name, path in exported.models.items()
    }


def _config(text: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    return config


def test_the_chain_is_one_batched_ensemble(chain: ExportedPipeline) -> None:
    ensemble = plan_ensemble("chain", chain.pipeline, _members(chain))
    config = _config(render_ensemble_config(ensemble))
    assert (config.platform, config.max_batch_size) == ("ensemble", 4)
    assert [(i.name, list(i.dims)) for i in config.input] == [("features", [4])]
    # A [batch] output is [1] per request outside the member (its reshape is the member's own business).
    assert [(o.name, list(o.dims), o.HasField("reshape")) for o in config.output] == [
        ("label", [1], False),
        ("probabilities", [3], False),
    ]
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["scaler", "pca", "classifier"]
    assert dict(steps[1].input_map) == {"X": "scaler.variable"}
    assert dict(steps[2].output_map) == {"label": "label", "probabilities": "probabilities"}


def test_a_branch_that_also_leaves_the_pipeline_feeds_the_join_under_its_output_name(
    fan: ExportedPipeline,
) -> None:
    config = _config(render_ensemble_config(plan_ensemble("fan", fan.pipeline, _members(fan))))
    steps = {s.model_name: s for s in config.ensemble_scheduling.step}
    assert dict(steps["pca"].output_map) == {"variable": "components"}
    assert dict(steps["fanin"].input_map) == {"0": "normalizer.variable", "1": "components"}
    assert dict(steps["scaler"].output_map) == {"variable": "scaler.variable"}  # read by two branches
    assert config.max_batch_size == 0


def _engines(root: Path, exported: ExportedPipeline) -> tuple[Path, CheckDocument]:
    """Each member as its conversion leaves it on the engine claim (engines/KEY/repository/model), and the
    check's document as the operator renders it."""
    ensemble = plan_ensemble(exported.name, exported.pipeline, _members(exported))
    members = {}
    for name, path in exported.models.items():
        config = render_model_config(
            name,
            inspect_model(path).signature,
            "onnxruntime_onnx",
            max_batch_size=exported.max_batch_size,
            triton=TRITON,
            gpus=0,
        )
        write_model_directory(root / "engines" / name / "repository", "model", config, {"model.onnx": path})
        members[name] = (config, f"engines/{name}/repository/model")
    document = CheckDocument(
        exported.name,
        exported.pipeline,
        render_ensemble_config(ensemble),
        members,
        ensemble.signature,
        ensemble.max_batch_size,
    )
    return root, document


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, CheckDocument, str]]:
    exported: ExportedPipeline = request.getfixturevalue(request.param)
    engines, document = _engines(tmp_path / "claim", exported)
    repository = tmp_path / "models"
    prepare_repository(document, engines, repository)
    assert (repository / "scaler" / "1").is_symlink()
    with LocalTriton(repository) as server:
        yield engines, document, server.endpoints.http


@pytest.mark.triton
@pytest.mark.parametrize("served", ["chain", "fan"], indirect=True)
def test_the_check_passes_a_served_ensemble_that_answers_like_the_chain(
    served: tuple[Path, CheckDocument, str],
) -> None:
    engines, document, url = served
    result = check_served_pipeline(document, engines, url)
    assert result["ok"], result
    parity = result["parity"]
    assert parity["check"] == "ensemble" and parity["passed"] and parity["samples"] == 8
    assert parity["maxAbsError"] <= 1e-5


@pytest.mark.triton
def test_a_member_triton_cannot_load_fails_the_check_at_once_with_triton_s_reason(
    chain: ExportedPipeline, tmp_path: Path
) -> None:
    engines, document = _engines(tmp_path / "claim", chain)
    config, engine = document.members["classifier"]
    broken = dict(document.members) | {"classifier": (config.replace('name: "X"', 'name: "Z"'), engine)}
    document = replace(document, members=broken)
    repository = tmp_path / "models"
    prepare_repository(document, engines, repository)
    # As the check Job's sidecar runs: alive with the models it could load.
    server = LocalTriton(repository, extra_args=["--exit-on-error=false"])
    server.start()
    try:
        result = check_served_pipeline(document, engines, server.endpoints.http, load_seconds=600)
    finally:
        server.stop()
    assert not result["ok"]
    assert result["error"]["reason"] == "PipelineLoadFailed"
    # Triton's own reason, read at once: not the deadline's "was not ready after 600s".
    assert "classifier: " in result["error"]["message"] and "ONNX model lacks" in result["error"]["message"]
    assert "not ready after" not in result["error"]["message"], result


@pytest.mark.triton
@pytest.mark.parametrize("served", ["chain"], indirect=True)
def test_the_check_fails_an_engine_that_answers_otherwise_than_its_source(
    served: tuple[Path, CheckDocument, str], tmp_path: Path
) -> None:
    engines, document, url = served
    # A TensorRT conversion keeps its source beside the engine; here the scaler's source is another model
    # of the same signature (a Normalizer), so the served engine and its reference disagree.
    source = engines / "engines" / "scaler" / "source" / "1"
    source.mkdir(parents=True)
    export_normalizer(source / "model.onnx")
    result = check_served_pipeline(document, engines, url)
    assert not result["ok"]
    assert result["error"]["reason"] == "ParityFailed"
    assert "differs from the chained ONNX models" in result["error"]["message"]
    assert result["parity"]["passed"] is False
