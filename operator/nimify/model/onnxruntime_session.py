"""Asking ONNX Runtime whether it can run a model: an InferenceSession on the CPU provider, never run.

For the onnxruntime backend ONNX Runtime is the authority: which opsets it reads, which kernels it has, which
functions it expands and which nodes it folds at load (`Constant` has no kernel at all) are its business, and
its answer changes with every release. So nothing here predicts it; a model is refused when, and only when,
ONNX Runtime refuses to load it, with ONNX Runtime's own message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nimify.model.errors import ModelError

MESSAGE_LIMIT = 1000
_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def open_session(path: Path, *, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session on a model file (external data resolved next to it).

    `threads` 0 lets ONNX Runtime size its pool; validation asks for 1, since it never runs the model.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # its errors come back as the exception, its warnings are noise here
    options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own pybind exception types (Fail, NotImplemented, ...)
        raise ModelError(
            "OnnxRuntimeLoadFailed", f"ONNX Runtime cannot load {path.name}: {runtime_message(error)}"
        ) from None


def check_onnxruntime_loads(path: Path) -> Any:
    """The loaded session; raises OnnxRuntimeLoadFailed with ONNX Runtime's message when it cannot load."""
    return open_session(path, threads=1)


def runtime_message(error: BaseException) -> str:
    """A runtime's exception as one line (ORT's messages span lines and carry ANSI colours)."""
    text = " ".join(_ANSI_COLOUR.sub("", str(error)).split())
    return text[:MESSAGE_LIMIT]
