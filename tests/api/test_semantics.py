"""Checks that need tables: TensorRT version by Triton release, GPU product abilities."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nimify.api import NimServiceSpec, nimservice_errors, semantic_errors
from nimify.api.semantics import compute_capability


def spec(**fields: Any) -> NimServiceSpec:
    return NimServiceSpec.model_validate({"model": {"uri": "s3://bucket/m/model.onnx"}, **fields})


def paths(found: list[Any]) -> list[str]:
    return [error.path for error in found]


def test_defaults_are_workable() -> None:
    assert semantic_errors(spec()) == []


def test_builder_flag_precision_needs_tensorrt_10() -> None:
    assert semantic_errors(spec(engine={"precision": "fp16"})) == []
    # Admission refuses this too; assignment skips validation, like an object stored before the rule existed.
    unworkable = spec(engine={"precision": "fp16"})
    unworkable.triton.image = "nvcr.io/nvidia/tritonserver:26.06-py3"
    [error] = semantic_errors(unworkable)
    assert error.path == "spec.engine.precision"
    assert "TensorRT 11" in error.message and "strongly typed" in error.message


def test_a_tag_without_a_release_cannot_pick_the_builder() -> None:
    found = semantic_errors(spec(triton={"image": "registry.local/triton:custom"}))
    assert paths(found) == ["spec.triton.image"]
    assert "YY.MM" in found[0].message


def test_releases_before_tensorrt_10_are_refused() -> None:
    found = semantic_errors(spec(triton={"image": "nvcr.io/nvidia/tritonserver:23.12-py3"}))
    assert paths(found) == ["spec.triton.image"]
    assert "TensorRT 8" in found[0].message


def test_no_build_no_release_check() -> None:
    custom = {"image": "registry.local/triton:custom"}
    assert semantic_errors(spec(engine={"backend": "onnxruntime"}, triton=custom)) == []
    assert semantic_errors(spec(model={"uri": "s3://bucket/m/model.plan"}, triton=custom)) == []


@pytest.mark.parametrize(
    ("precision", "product", "refused"),
    [
        ("bf16", "Tesla-T4", True),
        ("bf16", "NVIDIA-A100-SXM4-80GB", False),
        ("fp8", "NVIDIA-A100-SXM4-80GB", True),
        ("fp8", "NVIDIA-L4", False),
        ("fp8", "NVIDIA-H100-80GB-HBM3", False),
        ("fp16", "Tesla-T4", False),
        ("fp8", "Some-Future-GPU", False),
    ],
)
def test_precision_needs_a_capable_gpu(precision: str, product: str, refused: bool) -> None:
    found = semantic_errors(spec(engine={"precision": precision}, resources={"gpuProduct": product}))
    assert paths(found) == (["spec.engine.precision"] if refused else [])
    if refused:
        assert product in found[0].message


@pytest.mark.parametrize(
    ("product", "capability"),
    [
        ("Tesla-V100-SXM2-16GB", (7, 0)),
        ("Tesla-T4", (7, 5)),
        ("Quadro-RTX-6000", (7, 5)),
        ("NVIDIA-A100-PCIE-40GB", (8, 0)),
        ("NVIDIA-A10G", (8, 6)),
        ("NVIDIA-RTX-A6000", (8, 6)),
        ("NVIDIA-L4", (8, 9)),
        ("NVIDIA-L40S", (8, 9)),
        ("NVIDIA-RTX-6000-Ada-Generation", (8, 9)),
        ("NVIDIA-H100-80GB-HBM3", (9, 0)),
        ("NVIDIA-GH200-480GB", (9, 0)),
        ("NVIDIA-B200", (10, 0)),
        ("unknown", None),
    ],
)
def test_compute_capability_of_gpu_products(product: str, capability: tuple[int, int] | None) -> None:
    assert compute_capability(product) == capability


def test_nimservice_errors_reports_shape_before_semantics() -> None:
    document = {"metadata": {"name": "x"}, "spec": {"model": {"uri": "ftp://nope/model.onnx"}}}
    assert paths(nimservice_errors(document)) == ["spec.model.uri"]
    document = {
        "metadata": {"name": "x"},
        "spec": {"model": {"uri": "s3://bucket/m/model.onnx"}, "triton": {"image": "reg/triton:custom"}},
    }
    assert paths(nimservice_errors(document)) == ["spec.triton.image"]


def test_tensorrt_llm_images_keep_tensorrt_10() -> None:
    # 26.06-trtllm-python-py3 ships TensorRT 10.14, so the builder flags still exist there.
    trtllm = spec(
        engine={"precision": "fp16"}, triton={"image": "nvcr.io/nvidia/tritonserver:26.06-trtllm-python-py3"}
    )
    assert semantic_errors(trtllm) == []


def test_unmappable_image_variants_are_refused() -> None:
    found = semantic_errors(spec(triton={"image": "nvcr.io/nvidia/tritonserver:26.08-trtllm-python-py3"}))
    assert paths(found) == ["spec.triton.image"]
    assert "TensorRT-LLM" in found[0].message and "26.08" in found[0].message


def test_a_pipeline_member_cannot_be_a_model_image() -> None:
    from tests.api.cases import PIPELINE

    pipeline = copy.deepcopy(PIPELINE)
    pipeline["members"][1]["model"] = {"uri": "oci://registry.example.com/models/classifier:v1"}
    errors = semantic_errors(NimServiceSpec.model_validate({"pipeline": pipeline}))
    assert [str(e.path) for e in errors] == ["spec.pipeline.members[1].model.uri"]
    assert "served by a NimService of its own" in errors[0].message
