"""Real models from real exporters, shipped inside PyPI packages (hack/ensure-real-models.sh fetches them):
silero-vad's voice activity detectors (an STFT front-end, an LSTM with its state as input and output),
RapidOCR's PaddleOCR text detector (a convolutional network with several strides) and magika's tf2onnx
file-type classifier."""

from __future__ import annotations

import functools
from pathlib import Path

from tests.fetched import fetched_dir

SILERO_VAD_NAMED = "silero_vad/data/silero_vad_16k_op15.onnx"  # 'batch' and 'sequence' named
SILERO_VAD_UNNAMED = "silero_vad/data/silero_vad.onnx"  # no dim named at all
SILERO_VAD_SEQUENCE = "silero_vad/data/silero_vad_16k_sequence.onnx"  # an LSTM state dim named, runtime-fixed
OCR_DETECTOR = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
OCR_RECOGNISER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
MAGIKA = "magika/models/standard_v3_3/model.onnx"


@functools.cache
def real_models_dir() -> Path:
    """hack/ensure-real-models.sh's directory, fetched before any test or here, once."""
    return fetched_dir("NIMIFY_REAL_MODELS_DIR", "ensure-real-models.sh")


def real_model(relative: str) -> Path:
    path = real_models_dir() / relative
    assert path.is_file(), f"{relative} is not in {real_models_dir()} (hack/versions.env: REAL_MODEL_WHEELS)"
    return path
