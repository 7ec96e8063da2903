"""External data must stay inside the model's folder and match what the tensors declare."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from nimify.model.errors import ModelError
from nimify.model.external_data import check_external_data, safe_relative_location
from nimify.model.samples import build_mlp, write_model


def with_location(tmp_path: Path, location: str, **entries: str) -> Path:
    """The MLP with its weights in `weights.bin`, then the first initializer's location rewritten."""
    path = write_model(build_mlp(), tmp_path / "model.onnx", external_data="weights.bin")
    model = onnx.load_model(str(path), load_external_data=False)
    tensor = model.graph.initializer[0]
    values = {entry.key: entry.value for entry in tensor.external_data}
    values.update({"location": location, **entries})
    del tensor.external_data[:]
    for key, value in values.items():
        tensor.external_data.add(key=key, value=value)
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize(
    "location",
    [
        "/etc/passwd",
        "../outside.bin",
        "sub/../../outside.bin",
        "C:\\weights.bin",
        "\\\\server\\share\\w.bin",
        "~/w.bin",
    ],
)
def test_escaping_locations_are_refused(tmp_path: Path, location: str) -> None:
    path = with_location(tmp_path, location)
    model = onnx.load_model(str(path), load_external_data=False)
    with pytest.raises(ModelError) as error:
        check_external_data(model, path)
    assert error.value.reason == "ExternalDataPathEscapes"
    assert "w1" in error.value.message


def test_symlink_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"\0" * 4096)
    folder = tmp_path / "model"
    path = with_location(folder, "link.bin")
    (folder / "link.bin").symlink_to(outside)
    with pytest.raises(ModelError) as error:
        check_external_data(onnx.load_model(str(path), load_external_data=False), path)
    assert error.value.reason == "ExternalDataPathEscapes"
    assert "symlink" in error.value.message


def test_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    path = write_model(build_mlp(), tmp_path / "model.onnx", external_data="weights.bin")
    (tmp_path / "real").mkdir()
    (tmp_path / "weights.bin").rename(tmp_path / "real" / "weights.bin")
    (tmp_path / "weights.bin").symlink_to(tmp_path / "real" / "weights.bin")
    files = check_external_data(onnx.load_model(str(path), load_external_data=False), path)
    assert [f.name for f in files] == ["weights.bin"]


def test_missing_file(tmp_path: Path) -> None:
    path = write_model(build_mlp(), tmp_path / "model.onnx", external_data="weights.bin")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelError) as error:
        check_external_data(onnx.load_model(str(path), load_external_data=False), path)
    assert error.value.reason == "ExternalDataMissing"
    assert "weights.bin" in error.value.message


def test_truncated_file(tmp_path: Path) -> None:
    path = write_model(build_mlp(), tmp_path / "model.onnx", external_data="weights.bin")
    data = (tmp_path / "weights.bin").read_bytes()
    (tmp_path / "weights.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as error:
        check_external_data(onnx.load_model(str(path), load_external_data=False), path)
    assert error.value.reason == "ExternalDataTruncated"


def test_length_disagreeing_with_shape(tmp_path: Path) -> None:
    path = with_location(tmp_path, "weights.bin", length="16")
    with pytest.raises(ModelError) as error:
        check_external_data(onnx.load_model(str(path), load_external_data=False), path)
    assert error.value.reason == "ExternalDataSizeMismatch"
    assert "2048 bytes" in error.value.message


def test_non_numeric_offset(tmp_path: Path) -> None:
    path = with_location(tmp_path, "weights.bin", offset="zero")
    with pytest.raises(ModelError) as error:
        check_external_data(onnx.load_model(str(path), load_external_data=False), path)
    assert error.value.reason == "ExternalDataInvalid"


def test_nested_relative_location_is_allowed() -> None:
    assert str(safe_relative_location("weights/part-1.bin", "t")) == "weights/part-1.bin"
