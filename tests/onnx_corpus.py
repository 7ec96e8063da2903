"""The ONNX backend test corpus that ships inside the installed `onnx` wheel, found at run time.

`onnx/backend/test/data/{light,pytorch-converted,pytorch-operator,simple}`: model-zoo networks with their
weights replaced by generated constants (`light_*.onnx`, expected output next to each, inputs made the way
ONNX's own runner makes them) and PyTorch exports and small hand-built models (`*/model.onnx` with recorded
`test_data_set_*/input_*.pb` and `output_*.pb`). Tolerances are the corpus's own: `data.json` where a case has
one (`real/*/data.json` for the light models), else the runner's defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

KINDS = ("light", "pytorch-converted", "pytorch-operator", "simple")
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7  # onnx.backend.test.loader's defaults


def corpus_root() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data"


@dataclass(frozen=True)
class CorpusModel:
    kind: str
    name: str  # the case's name: light_resnet50, test_Conv2d, ...
    path: Path
    rtol: float
    atol: float

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def serving_name(self) -> str:
        """A Triton model name (a folder of the repository)."""
        return f"{self.kind}-{self.name}".lower().replace("_", "-")

    def data_sets(self) -> list[tuple[list[npt.NDArray[Any]], list[npt.NDArray[Any]]]]:
        """(inputs, expected outputs) per recorded data set, in graph input and output order."""
        if self.kind == "light":
            return [([_light_input(self.path)], [_tensor(self.path.with_name(f"{self.name}_output_0.pb"))])]
        sets = []
        for folder in sorted(self.path.parent.glob("test_data_set_*")):
            inputs = [_tensor(p) for p in sorted(folder.glob("input_*.pb"), key=_index)]
            outputs = [_tensor(p) for p in sorted(folder.glob("output_*.pb"), key=_index)]
            sets.append((inputs, outputs))
        return sets


def _index(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def _tensor(path: Path) -> npt.NDArray[Any]:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def _light_input(path: Path) -> npt.NDArray[Any]:
    """The input ONNX's backend runner feeds a light model: arange(n) / n in its shape (1 where dynamic)."""
    model = onnx.load(str(path), load_external_data=False)
    stored = {t.name for t in model.graph.initializer}
    (value,) = [v for v in model.graph.input if v.name not in stored]
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim)
    count = int(np.prod(shape))
    return (np.arange(count).reshape(shape) / count).astype(np.float32)


def _light_tolerances(root: Path) -> dict[str, tuple[float, float]]:
    found = {}
    for data in root.glob("real/*/data.json"):
        entry = json.loads(data.read_text())
        found[Path(entry["url"]).stem] = (entry.get("rtol", DEFAULT_RTOL), entry.get("atol", DEFAULT_ATOL))
    return found


def corpus_models() -> list[CorpusModel]:
    root = corpus_root()
    light = _light_tolerances(root)
    models = []
    for path in sorted((root / "light").glob("light_*.onnx")):
        rtol, atol = light.get(path.stem, (DEFAULT_RTOL, DEFAULT_ATOL))
        models.append(CorpusModel("light", path.stem, path, rtol, atol))
    for kind in KINDS[1:]:
        for path in sorted((root / kind).glob("*/model.onnx")):
            data = path.parent / "data.json"
            entry = json.loads(data.read_text()) if data.is_file() else {}
            models.append(
                CorpusModel(
                    kind,
                    path.parent.name,
                    path,
                    entry.get("rtol", DEFAULT_RTOL),
                    entry.get("atol", DEFAULT_ATOL),
                )
            )
    return models
