"""`nimify create` and `nimify openapi` with a pipeline: each member inspected and run as a model is, the
graph checked against the members' real signatures, refusals naming the field at fault."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from nimify.api import NimService
from nimify.api.semantics import nimservice_errors
from nimify.model.digest import file_sha256
from tests.cli.conftest import Cli
from tests.cli.pipeline_files import local_pipeline, model_file_args, write_pipeline
from tests.pipelines import ExportedPipeline, export_chain, export_fan

CPU = ["--backend", "onnxruntime", "--gpus", "0"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> ExportedPipeline:
    return export_chain(tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="module")
def fan(tmp_path_factory: pytest.TempPathFactory) -> ExportedPipeline:
    return export_fan(tmp_path_factory.mktemp("fan"))


def _create(cli: Cli, exported: ExportedPipeline, spec: dict[str, Any], tmp_path: Path, *args: str) -> Any:
    path = write_pipeline(tmp_path / f"{exported.name}.yaml", spec)
    return cli("create", "--pipeline", str(path), *model_file_args(exported), *CPU, *args)


@pytest.mark.parametrize(("which", "batching"), [("chain", ["--max-batch-size", "4"]), ("fan", [])])
def test_create_writes_a_valid_pipeline_nimservice(
    request: pytest.FixtureRequest, tmp_path: Path, cli: Cli, which: str, batching: list[str]
) -> None:
    exported: ExportedPipeline = request.getfixturevalue(which)
    result = _create(cli, exported, exported.spec, tmp_path, *batching)
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    assert nimservice_errors(document) == []
    service = NimService.model_validate(document)
    assert service.metadata.name == exported.name  # the file's stem
    assert service.spec.model is None and service.spec.pipeline is not None
    assert service.spec.pipeline.steps == exported.pipeline.steps
    for member in service.spec.pipeline.members:
        assert member.model.sha256 == file_sha256(exported.models[member.name])
        assert member.model.uri == f"https://models.example/{member.name}.onnx"
    batched = "on" if batching else "off"
    assert all(f"{name}: triton batching: {batched}" in result.stderr for name in exported.models)


def test_create_takes_a_name_and_member_engines(chain: ExportedPipeline, tmp_path: Path, cli: Cli) -> None:
    spec = copy.deepcopy(chain.spec)
    spec["members"][2]["engine"] = {"backend": "onnxruntime", "maxBatchSize": 2}
    output = tmp_path / "scored.yaml"
    result = _create(
        cli, chain, spec, tmp_path, "--name", "scored", "--max-batch-size", "4", "-o", str(output)
    )
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(output.read_text())
    assert nimservice_errors(document) == [] and document["metadata"]["name"] == "scored"
    assert document["spec"]["pipeline"]["members"][2]["engine"] == {
        "backend": "onnxruntime",
        "maxBatchSize": 2,
    }
    assert "pipeline scored: 3 members, batching up to 2 per request" in result.stderr


def _with_member(spec: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    """`spec` with one more member (the PCA model again) fed from `source`, its output a pipeline output."""
    spec = copy.deepcopy(spec)
    spec["members"].append({"name": name, "model": {"uri": f"https://models.example/{name}.onnx"}})
    spec["steps"].append({"member": name, "inputs": [{"name": "X", "from": source}]})
    spec["outputs"].append({"name": name, "from": f"{name}.variable"})
    return spec


def _edited(spec: dict[str, Any], edit: str) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    if edit == "unknown tensor":
        spec["steps"][1]["inputs"][0]["from"] = "scaler.scaled"
    elif edit == "unknown input":
        spec["steps"][1]["inputs"][0]["name"] = "features"
    elif edit == "dtype":
        spec = _with_member(spec, "post", "classifier.label")
    elif edit == "size":
        spec["steps"][2]["inputs"][0]["from"] = "scaler.variable"
        spec["outputs"].append({"name": "components", "from": "pca.variable"})
    elif edit == "order":
        spec["steps"][1], spec["steps"][2] = spec["steps"][2], spec["steps"][1]
    elif edit == "batching":
        spec["members"][2]["engine"] = {"backend": "onnxruntime", "maxBatchSize": 0}
    elif edit == "no such step":
        spec["outputs"][0]["from"] = "ranker.label"
    return spec


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            "unknown tensor",
            "error: PipelineTensorUnknown: spec.pipeline.steps[1].inputs[0].from: scaler.scaled: scaler has"
            " no output 'scaled'; its outputs are variable",
        ),
        (
            "unknown input",
            "error: PipelineInputUnfed: spec.pipeline.steps[1].inputs: pca's input 'X' has no source",
        ),
        (
            "dtype",
            "error: PipelineTensorMismatch: spec.pipeline.steps[3].inputs[0].from: classifier.label is INT64"
            " [?], but post's input 'X' is FLOAT [?, 4]",
        ),
        (
            "size",
            "error: PipelineTensorMismatch: spec.pipeline.steps[2].inputs[0].from: scaler.variable is FLOAT"
            " [?, 4], but classifier's input 'X' is FLOAT [?, 2]",
        ),
        (
            "order",
            "error: InvalidPipeline: spec.pipeline.steps[1].inputs[0].from: pca.variable comes from step pca,"
            " listed after classifier",
        ),
        ("batching", "error: PipelineBatchingMismatch: spec.pipeline.members[2].engine.maxBatchSize: member"),
        (
            "no such step",
            "error: InvalidPipeline: spec.pipeline.outputs: each pipeline output is STEP.OUTPUT",
        ),
    ],
)
def test_create_refuses_a_pipeline_that_does_not_connect(
    chain: ExportedPipeline, tmp_path: Path, cli: Cli, edit: str, expected: str
) -> None:
    spec = _edited(chain.spec, edit)
    args = ["--max-batch-size", "4"]
    if edit == "dtype":
        args += ["--model-file", f"post={chain.models['pca']}"]
    result = _create(cli, chain, spec, tmp_path, *args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(expected), result.stderr
    assert not result.stdout


def test_create_checks_each_member_as_a_model(fan: ExportedPipeline, tmp_path: Path, cli: Cli) -> None:
    # The corpus model fixes its first dimension at 3: nothing batches it, so asking is refused for it.
    result = _create(cli, fan, fan.spec, tmp_path, "--max-batch-size", "4")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: BatchingImpossible: spec.pipeline.members[3] (fanin): engine.")


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (
            ["--name", "pca"],
            1,
            "error: InvalidManifest: spec.pipeline.members: a pipeline member may not take",
        ),
        (["--uri", "s3://models/m.onnx"], 2, "--uri is one model's"),
        (["--profile", "X=1x4:2x4:4x4"], 2, "--profile is one model's"),
        (["--model-file", "ranker=r.onnx"], 2, "the pipeline has no member 'ranker'"),
    ],
)
def test_create_pipeline_usage(
    chain: ExportedPipeline, tmp_path: Path, cli: Cli, args: list[str], code: int, expected: str
) -> None:
    result = _create(cli, chain, chain.spec, tmp_path, *args)
    assert result.exit_code == code, result.output
    assert expected in " ".join(result.stderr.split()), result.stderr


def test_create_refuses_a_member_the_cluster_cannot_fetch(fan: ExportedPipeline, cli: Cli) -> None:
    path = local_pipeline(fan, fan.models["scaler"].parent)
    result = cli("create", "--pipeline", str(path), *CPU)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: ModelUriRequired: spec.pipeline.members[0].model.uri is a local file"
    ), result.stderr
    both = cli("create", str(fan.models["scaler"]), "--pipeline", str(path), "--name", "x")
    assert both.exit_code == 2 and "give MODEL or --pipeline FILE" in both.stderr


def _schemas(document: dict[str, Any]) -> dict[str, Any]:
    validate(document)  # openapi-spec-validator: the whole OpenAPI 3.1 document
    schemas: dict[str, Any] = document["components"]["schemas"]
    return schemas


def _tensors(schemas: dict[str, Any], request: str) -> set[str]:
    refs = schemas[request]["properties"]["inputs"]["items"]["oneOf"]
    return {schemas[ref["$ref"].rsplit("/", 1)[1]]["title"] for ref in refs}


def test_openapi_of_a_pipeline_nimservice(chain: ExportedPipeline, tmp_path: Path, cli: Cli) -> None:
    manifest = tmp_path / "nimservice.yaml"
    created = _create(
        cli, chain, chain.spec, tmp_path, "--name", "scored", "--max-batch-size", "4", "-o", str(manifest)
    )
    assert created.exit_code == 0, created.output
    result = cli("openapi", "--pipeline", str(manifest), *model_file_args(chain))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    schemas = _schemas(document)
    assert {"/v2/models/scored/infer", "/v2/models/scaler/infer", "/v2/models/classifier/infer"} <= set(
        document["paths"]
    )
    assert _tensors(schemas, "InferRequest") == {"features"}
    assert schemas["RequestedOutput"]["properties"]["name"]["enum"] == ["label", "probabilities"]
    assert schemas["InferResponse"]["properties"]["model_name"]["const"] == "scored"
    # The manifest's engine (maxBatchSize 4) batches the pipeline: a [batch] output travels as [batch, 1].
    label = schemas["Output_label"]["properties"]
    assert label["datatype"]["const"] == "INT64"
    assert label["shape"]["prefixItems"] == [
        {"type": "integer", "minimum": 0, "description": "batch size"},
        {"type": "integer", "const": 1},
    ]
    assert _tensors(schemas, "pca.InferRequest") == {"X"}
    assert "up to 4" in document["info"]["description"]


def test_openapi_of_a_pipeline_file_beside_its_models(fan: ExportedPipeline, cli: Cli) -> None:
    path = local_pipeline(fan, fan.models["scaler"].parent)
    result = cli("openapi", "--pipeline", str(path), "--yaml")
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    schemas = _schemas(document)
    assert "/v2/models/fan/infer" in document["paths"]
    assert _tensors(schemas, "InferRequest") == {"features"}
    assert schemas["RequestedOutput"]["properties"]["name"]["enum"] == ["larger", "components"]
    assert _tensors(schemas, "fanin.InferRequest") == {"0", "1"}
    # Nothing batches: full shapes, the rows as the first member declares them (any; fanin takes 3).
    features = schemas["Input_features"]["properties"]["shape"]["prefixItems"]
    assert features == [
        {"type": "integer", "minimum": 0, "description": "dynamic"},
        {"type": "integer", "const": 4},
    ]
    bad = _edited(fan.spec, "no such step")
    refused = cli("openapi", "--pipeline", str(write_pipeline(path.with_name("bad.yaml"), bad)))
    assert refused.exit_code == 1 and "spec.pipeline.outputs" in refused.stderr
