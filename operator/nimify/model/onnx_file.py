"""Reading an ONNX file's protobuf (never its external data) and telling ONNX apart from what users mistake
for it."""

from __future__ import annotations

from pathlib import Path

import onnx

from nimify.model.errors import ModelError

# A protobuf message cannot exceed 2 GiB; bigger models keep their weights in external data files.
MAX_PROTOBUF_BYTES = 2**31 - 1

PLAN_SUFFIXES = (".plan", ".engine", ".trt")

# Leading bytes of files people hand over instead of an ONNX model, with what they most likely are.
_LOOKALIKES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pth checkpoint?)"),
    (b"\x89HDF", "an HDF5 file (a Keras .h5 model?)"),
    (b"\x80\x02", "a Python pickle"),
    (b"GGUF", "a GGUF model"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"<", "an HTML or XML document (an error page saved as the model?)"),
    (b"{", "a JSON document"),
    (b"version https://git-lfs", "a Git LFS pointer, not the model it points to"),
)


def describe_lookalike(head: bytes) -> str | None:
    stripped = head.lstrip()
    for magic, what in _LOOKALIKES:
        if stripped.startswith(magic):
            return what
    if head[:4] == b"ftrt" or head[4:8] == b"ftrt":
        return "a TensorRT plan (set the model format to tensorrt-plan)"
    return None


def looks_like_plan(path: Path) -> bool:
    if path.suffix.lower() in PLAN_SUFFIXES:
        return True
    with path.open("rb") as stream:
        head = stream.read(8)
    return head[:4] == b"ftrt" or head[4:8] == b"ftrt"


def _starts_like_onnx(head: bytes) -> bool:
    # Exporters write ModelProto field 1 (ir_version, a varint) first: tag byte 0x08 then a small version
    # number.
    return len(head) >= 2 and head[0] == 0x08 and 0 < head[1] < 64


def check_model_file(path: Path) -> int:
    """The file's size, after refusing missing, empty, oversized and non-regular files."""
    if not path.exists():
        raise ModelError("ModelNotFound", f"{path}: no such file")
    if path.is_dir():
        raise ModelError("ModelIsDirectory", f"{path} is a directory; name the .onnx file inside it")
    if not path.is_file():
        raise ModelError("ModelNotRegularFile", f"{path} is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise ModelError("ModelEmpty", f"{path.name} is empty (0 bytes)")
    return size


def read_onnx(path: Path) -> onnx.ModelProto:
    """Parse the model's protobuf without loading external data; errors say what the file is instead."""
    size = check_model_file(path)
    with path.open("rb") as stream:
        head = stream.read(64)
    if size > MAX_PROTOBUF_BYTES:
        raise ModelError(
            "ModelTooLarge",
            f"{path.name} is {size} bytes; a single ONNX protobuf cannot exceed 2 GiB "
            "(save the weights as external data)",
        )
    if (what := describe_lookalike(head)) is not None:
        raise ModelError("NotOnnx", f"{path.name} is not an ONNX model: it looks like {what}")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and onnx's own errors alike: the file is unusable
        if _starts_like_onnx(head):
            raise ModelError(
                "ModelTruncated", f"{path.name} is a truncated or corrupt ONNX file ({size} bytes): {error}"
            ) from None
        raise ModelError(
            "NotOnnx", f"{path.name} is not an ONNX model (protobuf parse failed: {error})"
        ) from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelError(
            "NotOnnx" if not _starts_like_onnx(head) else "ModelTruncated",
            f"{path.name} parsed as protobuf but holds no ONNX graph (ir_version {model.ir_version})",
        )
    return model
