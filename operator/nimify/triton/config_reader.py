"""Reading a config.pbtxt back: the batching and the tensors Triton builds requests from and hands a backend.

Only what decides the shape and type of what a backend receives is read: max_batch_size, and per input and
output its name, data_type, dims and reshape.
"""

from __future__ import annotations

from dataclasses import dataclass

from nimify.model.dtypes import BY_TRITON
from nimify.model.errors import ModelError
from nimify.triton.pbtxt import Message, ParseError, Token, parse


@dataclass(frozen=True)
class ConfigTensor:
    name: str
    dtype: str  # ONNX's name (FLOAT, INT64, ...), from the config's TYPE_* data_type
    dims: tuple[int, ...]  # as declared, -1 for variable, without the batch dimension when batching
    reshape: tuple[int, ...] | None  # the shape the backend sees instead of dims, when given

    @property
    def backend_dims(self) -> tuple[int, ...]:
        return self.dims if self.reshape is None else self.reshape


@dataclass(frozen=True)
class ServedConfig:
    max_batch_size: int
    inputs: tuple[ConfigTensor, ...]
    outputs: tuple[ConfigTensor, ...]

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0


def _int(value: object, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError("InvalidModelConfig", f"{label} is {value!r}, not an integer")
    return value


def _tensor(message: Message, label: str) -> ConfigTensor:
    name = message.first("name")
    data_type = message.first("data_type")
    if not isinstance(name, str) or not isinstance(data_type, Token) or data_type.name not in BY_TRITON:
        raise ModelError("InvalidModelConfig", f"{label}: needs a name and a known data_type")
    dims = tuple(_int(d, f"{label} '{name}' dims") for d in message.values("dims"))
    reshape_message = message.first("reshape")
    reshape = None
    if isinstance(reshape_message, Message):
        reshape = tuple(_int(d, f"{label} '{name}' reshape") for d in reshape_message.values("shape"))
    return ConfigTensor(name, BY_TRITON[data_type.name].name, dims, reshape)


def read_model_config(text: str, source: str = "config.pbtxt") -> ServedConfig:
    try:
        config = parse(text)
    except ParseError as error:
        raise ModelError("InvalidModelConfig", f"{source}: {error}") from None
    max_batch_size = config.first("max_batch_size")
    inputs = [item for item in config.values("input") if isinstance(item, Message)]
    outputs = [item for item in config.values("output") if isinstance(item, Message)]
    return ServedConfig(
        max_batch_size=0 if max_batch_size is None else _int(max_batch_size, f"{source}: max_batch_size"),
        inputs=tuple(_tensor(item, f"{source}: input") for item in inputs),
        outputs=tuple(_tensor(item, f"{source}: output") for item in outputs),
    )
