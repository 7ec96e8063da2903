"""Optimization profiles derived from the signature, or checked when the spec gives them."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimify.api import ShapeProfile
from nimify.engine.profiles import derive_profiles
from nimify.model.errors import ModelError
from nimify.model.inspection import inspect_model
from nimify.model.samples import write_sample
from nimify.model.signature import Signature


def signature(tmp_path: Path, name: str) -> Signature:
    return inspect_model(write_sample(name, tmp_path)).signature


def bounds(profile: ShapeProfile) -> tuple[list[int], list[int], list[int]]:
    return profile.min, profile.opt, profile.max


def test_batch_dims_span_one_to_max_batch(tmp_path: Path) -> None:
    (profile,) = derive_profiles(signature(tmp_path, "mlp"), 16)
    assert profile.input == "input" and bounds(profile) == ([1, 16], [16, 16], [16, 16])


def test_shared_names_share_ranges(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        derive_profiles(signature(tmp_path, "int_bool"), 8)
    assert error.value.reason == "ProfileRequired" and "'seq'" in error.value.message
    seq = [ShapeProfile(input=n, min=[1, 1], opt=[8, 64], max=[8, 512]) for n in ("token_ids", "mask")]
    assert derive_profiles(signature(tmp_path, "int_bool"), 8, seq) == seq
    uneven = [seq[0], ShapeProfile(input="mask", min=[1, 1], opt=[8, 32], max=[8, 512])]
    with pytest.raises(ModelError) as error:
        derive_profiles(signature(tmp_path, "int_bool"), 8, uneven)
    assert error.value.reason == "ProfileInconsistent" and "'seq'" in error.value.message


def test_recurrent_state_batch_at_position_one(tmp_path: Path) -> None:
    profiles = derive_profiles(signature(tmp_path, "recurrent"), 0)
    assert [p.input for p in profiles] == ["x", "state"]  # the scalar needs no profile
    assert bounds(profiles[1]) == ([2, 1, 16], [2, 8, 16], [2, 8, 16])


def test_spatial_dims_need_the_spec(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        derive_profiles(signature(tmp_path, "cnn"), 8)
    assert "input 'image'" in error.value.message and "dimension 2 ('height')" in error.value.message


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (ShapeProfile(input="input", min=[1], opt=[8], max=[8]), "rank 1"),
        (ShapeProfile(input="input", min=[1, 8], opt=[8, 8], max=[8, 8]), "fixed at 16"),
        (ShapeProfile(input="input", min=[1, 16], opt=[2, 16], max=[4, 16]), "below max_batch_size 8"),
        (ShapeProfile(input="other", min=[1], opt=[1], max=[1]), "lacks: other"),
    ],
)
def test_given_profiles_are_checked(tmp_path: Path, profile: ShapeProfile, message: str) -> None:
    with pytest.raises(ModelError) as error:
        derive_profiles(signature(tmp_path, "mlp"), 8, [profile])
    assert error.value.reason == "ProfileMismatch" and message in error.value.message
