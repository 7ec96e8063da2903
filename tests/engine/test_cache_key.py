"""engine_cache_key: a pure function of what shapes the built engine, and nothing else."""

from __future__ import annotations

import pytest

from nimify.api import EngineSpec
from nimify.engine.cache_key import engine_cache_key, engine_settings
from nimify.model.errors import ModelError

DIGEST = "ab" * 32
KEY = engine_cache_key(DIGEST, EngineSpec(), "10.13.0.35", "NVIDIA-H100-80GB-HBM3")


def test_shape() -> None:
    assert len(KEY) == 64 and int(KEY, 16) >= 0
    assert engine_cache_key("sha256:" + DIGEST.upper(), {}, "10.13.0.35", "NVIDIA-H100-80GB-HBM3") == KEY


@pytest.mark.parametrize(
    "changed",
    [
        engine_cache_key("cd" * 32, EngineSpec(), "10.13.0.35", "NVIDIA-H100-80GB-HBM3"),
        engine_cache_key(DIGEST, EngineSpec(precision="fp16"), "10.13.0.35", "NVIDIA-H100-80GB-HBM3"),
        engine_cache_key(DIGEST, EngineSpec(max_batch_size=16), "10.13.0.35", "NVIDIA-H100-80GB-HBM3"),
        engine_cache_key(DIGEST, EngineSpec(workspace="2Gi"), "10.13.0.35", "NVIDIA-H100-80GB-HBM3"),
        engine_cache_key(DIGEST, EngineSpec(backend="onnxruntime"), "10.13.0.35", "NVIDIA-H100-80GB-HBM3"),
        engine_cache_key(DIGEST, EngineSpec(), "10.14.1.48", "NVIDIA-H100-80GB-HBM3"),
        engine_cache_key(DIGEST, EngineSpec(), "10.13.0.35", "NVIDIA-L4"),
        engine_cache_key(
            DIGEST, EngineSpec(), "10.13.0.35", "NVIDIA-H100-80GB-HBM3", variant="python-backend"
        ),
        engine_cache_key(
            DIGEST,
            {"profiles": [{"input": "x", "min": [1, 3], "opt": [4, 3], "max": [8, 3]}]},
            "10.13.0.35",
            "NVIDIA-H100-80GB-HBM3",
        ),
    ],
)
def test_everything_that_shapes_the_engine_changes_the_key(changed: str) -> None:
    assert changed != KEY


def test_what_does_not_shape_the_engine_keeps_the_key() -> None:
    same = EngineSpec.model_validate({"parity": {"atol": 0.5, "samples": 2}, "buildTimeoutSeconds": 7200})
    assert engine_cache_key(DIGEST, same, "10.13.0.35", "NVIDIA-H100-80GB-HBM3") == KEY
    by_suffix = engine_cache_key(DIGEST, EngineSpec(workspace="4Gi"), "10.13.0.35", "NVIDIA-H100-80GB-HBM3")
    by_number = engine_cache_key(
        DIGEST, EngineSpec(workspace=4 * 2**30), "10.13.0.35", "NVIDIA-H100-80GB-HBM3"
    )
    assert by_suffix == by_number


def test_settings_are_canonical() -> None:
    assert engine_settings({"workspace": "1Mi"}) == {
        "backend": "tensorrt",
        "precision": "auto",
        "profiles": None,
        "maxBatchSize": None,
        "workspace": 1048576,
    }


def test_bad_digest() -> None:
    with pytest.raises(ModelError) as error:
        engine_cache_key("not-a-digest", EngineSpec(), None, None)
    assert error.value.reason == "InvalidDigest"
