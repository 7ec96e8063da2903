"""External data references of an ONNX model, and the checks that keep them inside the model's folder.

A tensor stored outside the protobuf names its file in a `location` entry. That string is attacker-controlled
input: an absolute path, a `..` component or a symlink would make the loader read any file on the machine
(CVEs exist for exactly this), so every location must resolve to a regular file under the model's folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from onnx import ModelProto, TensorProto

from nimify.model import graph_walk
from nimify.model.dtypes import itemsize, onnx_type_name
from nimify.model.errors import ModelError


@dataclass(frozen=True)
class ExternalRef:
    tensor: str
    location: str
    offset: int
    length: int | None  # None: to the end of the file
    expected_bytes: int | None  # from the tensor's dims and type; None for strings and packed types


def external_refs(model: ModelProto) -> list[ExternalRef]:
    refs = []
    for tensor in graph_walk.tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        label = f"tensor '{tensor.name}'"
        location = entries.get("location", "")
        if not location:
            raise ModelError("ExternalDataInvalid", f"{label} is stored externally but names no location")
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else None
        except ValueError:
            raise ModelError(
                "ExternalDataInvalid", f"{label}: offset/length of '{location}' are not integers"
            ) from None
        if offset < 0 or (length is not None and length < 0):
            raise ModelError("ExternalDataInvalid", f"{label}: negative offset or length for '{location}'")
        size = itemsize(tensor.data_type)
        expected = None if size is None else math.prod(tensor.dims) * size
        refs.append(ExternalRef(tensor.name, location, offset, length, expected))
    return refs


def safe_relative_location(location: str, label: str) -> PurePosixPath:
    """The location as a relative path that cannot leave the model's folder, or ExternalDataPathEscapes."""
    windows = PureWindowsPath(location)
    posix = PurePosixPath(location.replace("\\", "/"))
    if posix.is_absolute() or windows.is_absolute() or windows.drive or location.startswith("~"):
        raise ModelError(
            "ExternalDataPathEscapes", f"{label}: external data location '{location}' is an absolute path"
        )
    if ".." in posix.parts:
        raise ModelError(
            "ExternalDataPathEscapes", f"{label}: external data location '{location}' climbs out with '..'"
        )
    if "\x00" in location:
        raise ModelError("ExternalDataInvalid", f"{label}: external data location contains a NUL byte")
    return posix


def check_external_data(model: ModelProto, model_path: Path) -> list[Path]:
    """Checks every external reference of a model stored at `model_path`; returns the distinct files, in
    order."""
    root = model_path.parent.resolve()
    files: dict[str, Path] = {}
    for ref in external_refs(model):
        label = f"{model_path.name}: tensor '{ref.tensor}'"
        relative = safe_relative_location(ref.location, label)
        candidate = root.joinpath(*relative.parts)
        resolved = candidate.resolve()
        if not resolved.is_relative_to(root):
            raise ModelError(
                "ExternalDataPathEscapes",
                f"{label}: external data '{ref.location}' resolves to {resolved}, outside {root} (symlink)",
            )
        if not resolved.exists():
            raise ModelError(
                "ExternalDataMissing", f"{label}: external data file '{ref.location}' is missing"
            )
        if not resolved.is_file():
            raise ModelError("ExternalDataInvalid", f"{label}: external data '{ref.location}' is not a file")
        file_size = resolved.stat().st_size
        available = file_size - ref.offset
        length = available if ref.length is None else ref.length
        if ref.offset > file_size or length > available:
            raise ModelError(
                "ExternalDataTruncated",
                f"{label}: needs bytes {ref.offset}..{ref.offset + length} of '{ref.location}', "
                f"which has {file_size}",
            )
        if ref.expected_bytes is not None and ref.length is not None and ref.expected_bytes != ref.length:
            raise ModelError(
                "ExternalDataSizeMismatch",
                f"{label}: its shape and type need {ref.expected_bytes} bytes, "
                f"'{ref.location}' declares {ref.length}",
            )
        files.setdefault(str(relative), candidate)
    return list(files.values())


def describe_tensor(tensor: TensorProto) -> str:
    return f"'{tensor.name}' ({onnx_type_name(tensor.data_type)} {list(tensor.dims)})"
