"""hack/gpu-check up to the GPU calls: the plan of builds, the pipeline and the table, against the fakes.
(It has not run on a GPU from these tests; that is what the script is for.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from nimify.engine.gpu_check import MODELS, main, planned, quantized_mlp
from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.samples import write_model
from tests.engine.fake_tensorrt import FakeCudaRuntime, FakeTensorRT

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(
    capsys: pytest.CaptureFixture[str], argv: list[str], trt: FakeTensorRT, **cuda: object
) -> tuple[int, str]:
    code = main(argv, trt=trt, cudart=FakeCudaRuntime(**cuda))  # type: ignore[arg-type]
    return code, capsys.readouterr().out


def rows(table: str) -> dict[tuple[str, str], list[str]]:
    found = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 11 and cells[0] not in ("model", "---"):
            found[(cells[0], cells[1])] = cells
    return found


def test_tensorrt_10_builds_every_precision_it_has(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, table = run(
        capsys, ["--models", "mlp,mlp_int8,mlp_fp8", "--json", str(tmp_path / "r.json")], FakeTensorRT()
    )
    assert code == 0, table
    built = rows(table)
    assert set(built) == {
        ("mlp", "auto"), ("mlp", "fp32"), ("mlp", "fp16"), ("mlp", "bf16"),
        ("mlp_int8", "auto"), ("mlp_int8", "int8"), ("mlp_fp8", "auto"), ("mlp_fp8", "fp8"),
    }  # fmt: skip
    assert all(cells[-1] == "ok" and cells[4] == "reused" and cells[6] == "ok" for cells in built.values())
    assert built[("mlp", "fp32")][9] == "1e-05/1e-05"
    assert float(built[("mlp", "fp16")][7]) > 0  # reduced precision shows in the figures
    assert "TensorRT 10.16.1.11 on NVIDIA-H100-80GB-HBM3 (compute capability 9.0)" in table
    assert "- needs a model quantized for it: mlp int8, mlp fp8" in table
    assert "8 of 8 passed" in table
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is True and len(report["rows"]) == 8


def test_tensorrt_11_builds_strongly_typed_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, table = run(capsys, ["--models", "mlp,mlp_int8"], FakeTensorRT("11.4.0.106"))
    assert code == 0
    assert set(rows(table)) == {("mlp", "auto"), ("mlp", "fp32"), ("mlp_int8", "auto")}
    assert "PrecisionNeedsGraph: mlp fp16, mlp bf16" in table


def test_every_sample_on_a_t4(capsys: pytest.CaptureFixture[str]) -> None:
    code, table = run(capsys, [], FakeTensorRT(gpu="Tesla T4"), name="Tesla T4", capability=(7, 5))
    assert code == 0, table
    built = rows(table)
    assert {model for model, _ in built} == set(MODELS)
    assert not [p for p in built if p[1] in ("bf16", "fp8")]
    assert "needs compute capability 8.0: " in table and "needs compute capability 8.9: mlp_fp8 fp8" in table


def test_failures_are_rows_and_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, table = run(capsys, ["--models", "mlp", "--precisions", "fp32"], FakeTensorRT(fail_build=True))
    assert code == 1
    [cells] = rows(table).values()
    assert cells[-1].startswith("FAILED: EngineBuildFailed") and "0 of 1 passed" in table


def test_no_timing_cache_reuse_fails_the_row(capsys: pytest.CaptureFixture[str]) -> None:
    # An unknown GPU product gets no shared timing cache, so the second build cannot reuse one.
    code, table = run(capsys, ["--models", "mlp", "--precisions", "fp32"], FakeTensorRT(), name="")
    assert code == 1 and "did not reuse the timing cache (none)" in table


def test_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--models", "resnet"], trt=FakeTensorRT(), cudart=FakeCudaRuntime())
    assert exit_.value.code == 2 and "unknown model or precision: resnet" in capsys.readouterr().err


def test_without_cuda_python_or_a_driver(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--models", "mlp"], trt=FakeTensorRT(), cudart=FakeCudaRuntime(runtime=13000, driver=12090))
    assert code == 1 and "CudaDriverTooOld" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_quantized_samples_run_in_onnx_runtime(tmp_path: Path, kind: str) -> None:
    """The reference side of the int8/fp8 rows is real: ONNX Runtime runs the Q/DQ graphs."""
    import numpy as np

    model = OnnxRuntimeModel(write_model(quantized_mlp(kind), tmp_path / f"{kind}.onnx"))
    out = model.run({"input": np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)})
    assert out["logits"].shape == (2, 4) and np.all(np.isfinite(out["logits"]))


def test_planned_without_a_known_capability() -> None:
    run_, skipped = planned(10, None, ["mlp"], ["bf16", "fp8"])
    assert run_ == [("mlp", "bf16")] and skipped == [("mlp", "fp8", "needs a model quantized for it")]


def test_the_script_refuses_a_machine_without_a_gpu(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "gpu-check")], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 2 and "needs a machine with an NVIDIA GPU" in result.stderr
