"""Reference inputs: seeded, typed, shapes that walk the profile and keep named dims consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nimify.api import ShapeProfile
from nimify.engine.reference import reference_inputs, sample_shapes
from nimify.model.inspection import inspect_model
from nimify.model.samples import write_sample
from nimify.model.signature import Signature


def signature(tmp_path: Path, name: str) -> Signature:
    return inspect_model(write_sample(name, tmp_path)).signature


def test_batch_walks_one_half_max(tmp_path: Path) -> None:
    # Half at opt, so the first two samples fit one batch of max_batch_size when Triton merges them.
    sig = signature(tmp_path, "mlp")
    assert [sample_shapes(sig, i, 8)["input"] for i in range(4)] == [(1, 16), (4, 16), (8, 16), (1, 16)]


def test_named_dims_agree_across_inputs(tmp_path: Path) -> None:
    sig = signature(tmp_path, "int_bool")
    for sample in range(3):
        shapes = sample_shapes(sig, sample, 4)
        assert shapes["token_ids"] == shapes["mask"]


def test_profiles_drive_shapes(tmp_path: Path) -> None:
    sig = signature(tmp_path, "cnn")
    profile = ShapeProfile(input="image", min=[1, 3, 8, 8], opt=[2, 3, 16, 24], max=[4, 3, 32, 40])
    shapes = [sample_shapes(sig, i, 4, [profile])["image"] for i in range(3)]
    assert shapes == [(1, 3, 8, 8), (2, 3, 16, 24), (4, 3, 32, 40)]


def test_recurrent_batch_follows_the_name(tmp_path: Path) -> None:
    shapes = sample_shapes(signature(tmp_path, "recurrent"), 1, 0)
    assert shapes == {"x": (4, 8), "state": (2, 4, 16), "temperature": ()}


def test_dtypes_and_seed(tmp_path: Path) -> None:
    sig = signature(tmp_path, "int_bool")
    first = reference_inputs(sig, 2, max_batch_size=4, seed=1)
    again = reference_inputs(sig, 2, max_batch_size=4, seed=1)
    assert first[0]["token_ids"].dtype == np.int64 and first[0]["mask"].dtype == np.bool_
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(first, again, strict=True) for k in a)
    assert first[0]["token_ids"].min() >= 0
