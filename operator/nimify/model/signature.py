"""A model's IO signature as the toolkit sees it: tensor names, dtypes and shapes whose dynamic dims keep
their names."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# A dimension is a fixed size (int), a named dynamic size (the ONNX dim_param), or an anonymous dynamic size.
Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # ONNX's upper-case name: FLOAT, INT64, BOOL, ...
    dims: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.dims)

    @property
    def shape(self) -> list[int]:
        """Shape as the API and Triton write it: -1 for every dynamic dimension."""
        return [d if isinstance(d, int) else -1 for d in self.dims]

    @property
    def dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.dims)

    def describe_dims(self) -> str:
        """`[batch, 3, ?, 224]`: named dims by name, anonymous ones as `?`."""
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": self.shape}
        if any(isinstance(d, str) for d in self.dims):
            data["dimNames"] = [d if isinstance(d, str) else None for d in self.dims]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorInfo:
        names = data.get("dimNames") or [None] * len(data["shape"])
        dims = tuple(
            name if size < 0 and name else (None if size < 0 else int(size))
            for size, name in zip(data["shape"], names, strict=True)
        )
        return cls(str(data["name"]), str(data["dtype"]), dims)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def tensors(self) -> Iterable[tuple[str, TensorInfo]]:
        for tensor in self.inputs:
            yield "input", tensor
        for tensor in self.outputs:
            yield "output", tensor

    def input(self, name: str) -> TensorInfo:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    def to_json(self, *, dim_names: bool = True) -> dict[str, Any]:
        def encode(tensor: TensorInfo) -> dict[str, Any]:
            data = tensor.to_json()
            if not dim_names:
                data.pop("dimNames", None)
            return data

        return {"inputs": [encode(t) for t in self.inputs], "outputs": [encode(t) for t in self.outputs]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        return cls(
            tuple(TensorInfo.from_json(t) for t in data.get("inputs", [])),
            tuple(TensorInfo.from_json(t) for t in data.get("outputs", [])),
        )
