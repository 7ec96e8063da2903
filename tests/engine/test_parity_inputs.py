"""Representative parity inputs: .npz files read without pickles and checked against the signature, and the
conversion that needs them (a reflect-padded STFT) with and without."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nimify.api import EngineSpec, GeneratedInput
from nimify.engine.convert import ConvertRequest, run_conversion
from nimify.engine.parity_inputs import load_parity_inputs
from nimify.engine.reference import reference_inputs
from nimify.engine.result import ConversionResult
from nimify.model.digest import file_sha256
from nimify.model.errors import ModelError
from nimify.model.inspection import inspect_model
from nimify.model.samples import build_spectrogram, write_model, write_sample
from nimify.model.signature import Signature


def signature(tmp_path: Path, name: str) -> Signature:
    return inspect_model(write_sample(name, tmp_path)).signature


def npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_arrays_named_after_inputs_form_one_sample(tmp_path: Path) -> None:
    sig = signature(tmp_path, "int_bool")
    path = npz(
        tmp_path / "one.npz", token_ids=np.arange(6, dtype=np.int32).reshape(2, 3), mask=np.ones((2, 3), bool)
    )
    (sample,) = load_parity_inputs(path, sig, "one.npz")
    assert sample["token_ids"].dtype == np.int64  # int32 casts safely to the model's INT64
    assert sample["mask"].shape == (2, 3)


def test_numbered_samples_and_missing_inputs(tmp_path: Path) -> None:
    sig = signature(tmp_path, "int_bool")
    path = npz(
        tmp_path / "two.npz",
        **{"0/token_ids": np.zeros((1, 5), np.int64), "1/token_ids": np.zeros((2, 7), np.int64)},
    )
    given = load_parity_inputs(path, sig, "two.npz")
    assert [sorted(s) for s in given] == [["token_ids"], ["token_ids"]]
    # The mask is generated, as long as the given tokens: the shared dims follow what was given.
    feeds = reference_inputs(sig, 8, max_batch_size=4, given=given)
    assert len(feeds) == 2
    assert [f["mask"].shape for f in feeds] == [(1, 5), (2, 7)]


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"tokens": np.zeros((1, 2), np.int64)}, "array 'tokens' names no input"),
        ({"token_ids": np.zeros((2,), np.int64)}, "input 'token_ids' has rank 2"),
        ({"token_ids": np.zeros((1, 2), np.float32)}, "does not cast to INT64"),
        (
            {"0/token_ids": np.zeros((1, 2), np.int64), "2/token_ids": np.zeros((1, 2), np.int64)},
            "without gaps",
        ),
        ({"token_ids": np.array([["a", "b"]], dtype=object)}, "save strings as NumPy string arrays"),
    ],
)
def test_files_that_do_not_fit_the_model(tmp_path: Path, arrays: dict[str, np.ndarray], needle: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelError) as error:
        load_parity_inputs(path, signature(tmp_path, "int_bool"), "bad.npz")
    assert error.value.reason == "InvalidParityInputs"
    assert needle in error.value.message


def test_a_fixed_dim_must_match(tmp_path: Path) -> None:
    path = npz(tmp_path / "x.npz", input=np.zeros((2, 15), np.float32))
    with pytest.raises(ModelError) as error:
        load_parity_inputs(path, signature(tmp_path, "mlp"), "x.npz")
    assert "dimension 1 of 'input' is 16" in error.value.message


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.write_text("audio samples")
    with pytest.raises(ModelError) as error:
        load_parity_inputs(path, signature(tmp_path, "mlp"), "x.npz")
    assert "is not a NumPy .npz file" in error.value.message


def test_generated_shapes_and_values(tmp_path: Path) -> None:
    sig = signature(tmp_path, "recurrent")
    generated = [
        GeneratedInput(input="x", shape=[5, 8]),
        GeneratedInput(input="temperature", value=0.25),
    ]
    for feeds in reference_inputs(sig, 3, max_batch_size=0, generated=generated):
        assert feeds["x"].shape == (5, 8)
        assert feeds["state"].shape == (2, 5, 16)  # batch follows x
        assert feeds["temperature"].shape == () and float(feeds["temperature"]) == 0.25


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (GeneratedInput(input="nope", value=1), "names inputs the model lacks: nope"),
        (GeneratedInput(input="x", shape=[5]), "has rank 1, input 'x' has rank 2"),
        (GeneratedInput(input="x", shape=[5, 9]), "dimension 1 of 'x' is fixed at 8"),
    ],
)
def test_generated_entries_that_do_not_fit(tmp_path: Path, entry: GeneratedInput, needle: str) -> None:
    with pytest.raises(ModelError) as error:
        reference_inputs(signature(tmp_path, "recurrent"), 1, max_batch_size=0, generated=[entry])
    assert error.value.reason == "InvalidParityInputs" and needle in error.value.message


def convert(
    tmp_path: Path,
    model: Path,
    parity: dict[str, object] | None = None,
    inputs: Path | None = None,
    sha256: str | None = None,
    **engine: object,
) -> ConversionResult:
    spec = EngineSpec.model_validate({"backend": "onnxruntime", "parity": parity or {}, **engine})
    return run_conversion(
        ConvertRequest(
            uri=str(model),
            parity_inputs=None if inputs is None else str(inputs),
            parity_inputs_sha256=sha256,
            name="spectrogram",
            repository=tmp_path / "repository",
            work_dir=tmp_path / "work",
            backend="onnxruntime",
            gpus=0,
            engine=spec,
        )
    )


def test_stft_parity_inputs_searched_given_or_shaped(tmp_path: Path) -> None:
    model = write_model(build_spectrogram(), tmp_path / "spectrogram.onnx")
    searched = convert(tmp_path / "s", model)
    assert searched.ok, searched.error
    assert json.loads(searched.json_line())["parity"]["inputs"] == "searched"
    # A window the user fixed too short is not searched over: the user must give inputs.
    failed = convert(tmp_path / "a", model, {"generated": [{"input": "audio", "shape": [1, 8]}]})
    assert failed.error is not None and failed.error.reason == "ParityInputsRequired"
    message = failed.error.message
    assert message.startswith("could not generate valid inputs for the parity check (audio generated)")
    assert "Pad reflect" in message and "engine.parity.inputs" in message and "--parity-inputs" in message
    assert not (tmp_path / "a" / "repository" / "spectrogram").exists()
    assert json.loads(failed.json_line())["error"]["reason"] == "ParityInputsRequired"

    rng = np.random.default_rng(7)
    samples = npz(
        tmp_path / "speech.npz",
        **{f"{i}/audio": rng.standard_normal((1, 16000)).astype(np.float32) for i in range(3)},
    )
    given = convert(tmp_path / "b", model, inputs=samples, sha256=file_sha256(samples))
    assert given.ok, given.error
    assert given.parity is not None and given.parity.samples == 3 and given.parity.passed
    assert json.loads(given.json_line())["parity"]["inputs"] == "file"
    assert (tmp_path / "b" / "repository" / "spectrogram" / "1" / "model.onnx").is_file()

    shaped = convert(tmp_path / "c", model, {"generated": [{"input": "audio", "shape": [1, 4000]}]})
    assert shaped.ok, shaped.error
    assert shaped.parity is not None and shaped.parity.samples == 8

    profiled = convert(
        tmp_path / "d",
        model,
        profiles=[{"input": "audio", "min": [1, 800], "opt": [2, 1600], "max": [8, 3200]}],
    )
    assert profiled.ok, profiled.error


def test_parity_inputs_digest_and_presence(tmp_path: Path) -> None:
    model = write_model(build_spectrogram(), tmp_path / "spectrogram.onnx")
    samples = npz(tmp_path / "speech.npz", audio=np.zeros((1, 1600), np.float32))
    wrong = convert(tmp_path / "a", model, inputs=samples, sha256="0" * 64)
    assert wrong.error is not None and wrong.error.reason == "DigestMismatch"
    assert wrong.error.message.startswith("engine.parity.inputs: ")
    missing = convert(tmp_path / "b", model, inputs=tmp_path / "nowhere.npz")
    assert missing.error is not None and missing.error.reason == "InvalidParityInputs"
