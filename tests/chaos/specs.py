"""NimService specs generated from the CRD's own OpenAPI schema (crds/), and hostile variations of them.

Most cases are what the schema allows (drawn by Hypothesis from the structural schema, so the interesting
refusals are the CEL rules' and the operator's), half of them with a model URI as users write
them; a quarter then have one value replaced by something the schema does not allow (a wrong type, a number
past its bounds, a long or odd string, a deep structure), which admission must refuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

CRDS = Path(__file__).resolve().parents[2] / "crds"
# What a generated collection or free string holds at most: enough to hit every rule, few enough to be fast.
_MOST_ITEMS = 4
_MOST_CHARACTERS = 40
_TEXT = st.characters(codec="utf-8", exclude_characters="\x00")
_LABEL_KEYS = st.from_regex(r"\A([a-z0-9.-]{1,20}/)?[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?\Z")


def crd_spec_schema() -> dict[str, Any]:
    """spec's structural schema, as the CRD file in crds/ has it."""
    (crd_file,) = CRDS.glob("*.yaml")
    crd = yaml.safe_load(crd_file.read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


# Hand-written rather than hypothesis-jsonschema's from_schema: that library rebuilds the strategy of every
# property on every draw (a quarter of a second per NimService spec: four minutes for a thousand) and drives
# Hypothesis internals that current Hypothesis releases no longer have. A Kubernetes structural schema needs
# only this much: typed objects, maps, lists, bounded strings and numbers, enums, int-or-string.
def from_structural(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the structural schema allows (its CEL rules are left to the apiserver)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:  # int-or-string: the bounds and pattern sit beside anyOf
        shared = {key: value for key, value in schema.items() if key != "anyOf"}
        return st.one_of([from_structural(shared | branch) for branch in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        if "properties" in schema:
            required = set(schema.get("required", ()))
            properties = {key: from_structural(value) for key, value in schema["properties"].items()}
            return st.fixed_dictionaries(
                {key: value for key, value in properties.items() if key in required},
                optional={key: value for key, value in properties.items() if key not in required},
            )
        if isinstance(schema.get("additionalProperties"), dict):
            keys = st.one_of(
                st.from_regex(r"\A[a-z0-9.-]{1,20}(/[a-z0-9-]{1,20})?\Z"), st.text(_TEXT, max_size=20)
            )
            values = from_structural(schema["additionalProperties"])
            return st.dictionaries(
                keys, values, max_size=min(schema.get("maxProperties", _MOST_ITEMS), _MOST_ITEMS)
            )
        return _JSON_OBJECTS  # free-form (x-kubernetes-preserve-unknown-fields)
    if kind == "array":
        items = from_structural(schema["items"])
        most = min(schema.get("maxItems", _MOST_ITEMS), _MOST_ITEMS)
        unique = schema.get("x-kubernetes-list-type") == "set"
        return st.lists(items, min_size=min(schema.get("minItems", 0), most), max_size=most, unique=unique)
    if kind == "string":
        longest = schema.get("maxLength", 10_000)
        if "pattern" in schema:
            matching = st.from_regex(schema["pattern"], fullmatch=True, alphabet=_TEXT)
            return matching.filter(lambda text: schema.get("minLength", 0) <= len(text) <= longest)
        return st.text(_TEXT, min_size=schema.get("minLength", 0), max_size=min(longest, _MOST_CHARACTERS))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    raise ValueError(f"no strategy for the schema {schema}")


_JSON_OBJECTS = st.dictionaries(
    st.text(_TEXT, max_size=12),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(_TEXT, max_size=12),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(_TEXT, max_size=8), inner, max_size=3)
        ),
        max_leaves=12,
    ),
    max_size=4,
)


_HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([-1, 0, 2**31, 2**53 + 1, 10**18]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", " ", "../../etc/passwd", "a" * 5000, "é" * 300, "${HOME}", "\n\t", "0x10", "1e309"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.recursive(st.integers(), lambda inner: st.lists(inner, max_size=2), max_leaves=30),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += _paths(child, (*prefix, index))
    return paths


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], tuple(rest), new)}
    copy = list(value)
    copy[head] = _replaced(value[head], tuple(rest), new)
    return copy


@st.composite
def _mutated(draw: st.DrawFn, specs: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    spec = draw(specs)
    paths = _paths(spec)
    if not paths:
        return {"model": draw(_HOSTILE_VALUES)}
    path = draw(st.sampled_from(paths))
    return dict(_replaced(spec, path, draw(_HOSTILE_VALUES)))


_NAME = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?\Z")
# URIs as users write them: the schema's pattern alone almost never ends in a model suffix, and the CEL rule
# that wants one (or a format) would refuse nearly every case before anything else is looked at.
_REALISTIC_URIS = st.builds(
    "{}{}/{}{}".format,
    st.sampled_from(["s3://", "gs://", "pvc://", "https://", "hf://org-a/"]),
    _NAME.filter(lambda name: len(name) >= 3),
    st.lists(_NAME, min_size=1, max_size=3).map("/".join),
    st.sampled_from([".onnx", ".plan", ".engine", ".onnx?X-Amz-Signature=abc", ".bin"]),
)


# Values the semantic checks (nimify.api.semantics: the TensorRT of a Triton release, what a GPU computes)
# have opinions on, which random strings would never hit.
_IMAGES = st.sampled_from(
    [
        f"nvcr.io/nvidia/tritonserver:{release}-py3"
        for release in ("23.01", "24.01", "25.10", "26.06", "99.12")
    ]
)
_GPU_PRODUCTS = st.sampled_from(["Tesla-T4", "NVIDIA-L4", "NVIDIA-A100-SXM4-40GB", "NVIDIA-H100-80GB-HBM3"])


@st.composite
def _steered(draw: st.DrawFn, specs: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    spec = draw(specs)
    # The schema makes model and pipeline both optional (exactly one is a CEL rule): most specs get a model,
    # as most users write; the rest keep what was drawn (pipelines, both, neither) for the rules about them.
    if draw(st.integers(0, 4)):
        spec = {key: value for key, value in spec.items() if key != "pipeline"}
        spec.setdefault("model", {"uri": ""})
    model = spec.get("model")
    if isinstance(model, dict):
        spec = {**spec, "model": {**model, "uri": draw(_REALISTIC_URIS)}}
    triton = spec.get("triton")
    if isinstance(triton, dict) and "tuning" in triton and draw(st.integers(0, 3)):
        # A drawn tuning rarely names its objective's figure, which admission requires (tests/api/cases.py
        # holds those refusals): most get a plain one, so the specs behind it are reached.
        spec = {**spec, "triton": {**triton, "tuning": {"p99LatencyBudgetMilliseconds": 50.0}}}
    if draw(st.booleans()):
        engine = spec.get("engine") or {}
        triton = spec.get("triton") or {}
        resources = spec.get("resources") or {}
        spec = {
            **spec,
            "engine": {
                **engine,
                "backend": "tensorrt",
                "precision": draw(st.sampled_from(["fp8", "bf16", "int8"])),
            },
            "triton": {**triton, "image": draw(_IMAGES)},
            "resources": {
                **resources,
                "gpus": max(resources.get("gpus", 1), 1),
                "gpuProduct": draw(_GPU_PRODUCTS),
            },
        }
    return spec


def hostile_specs() -> st.SearchStrategy[dict[str, Any]]:
    valid = from_structural(crd_spec_schema())
    steered = _steered(valid)
    return st.one_of(valid, steered, steered, _mutated(steered))


def generate(count: int, seed_value: int, cache: Path | None = None) -> list[dict[str, Any]]:
    """`count` cases, the same ones for the same seed: hypothesis draws them, nothing is shrunk (the property
    is checked against a live apiserver and operator, case by case, afterwards).

    Drawing a thousand takes half a minute of CPU, so the cases are kept in `cache` (default: the cache
    outside the clone that hack/ scripts use), under a hash of everything they depend on: this file, the
    CRD, Hypothesis's and Python's versions, the count and the seed. A changed input draws them again."""
    directory = cache if cache is not None else _cache_directory()
    stored = directory / f"{_inputs_hash(count, seed_value)}.json"
    try:
        cases: list[dict[str, Any]] = json.loads(stored.read_text())
        return cases
    except (OSError, ValueError):
        pass
    cases = _draw(count, seed_value)
    text = json.dumps(cases)
    if json.loads(text) == cases:  # JSON keeps every value Hypothesis drew (else: no cache, draw each time)
        directory.mkdir(parents=True, exist_ok=True)
        partial = stored.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(stored)  # atomic: a run beside this one reads all of it or nothing
    return cases


def _cache_directory() -> Path:
    base = (
        os.environ.get("NIMIFY_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nimify"
    )
    return Path(base) / "chaos-specs"


def _inputs_hash(count: int, seed_value: int) -> str:
    digest = hashlib.sha256()
    for part in (Path(__file__).read_bytes(), *(crd.read_bytes() for crd in sorted(CRDS.glob("*.yaml")))):
        digest.update(hashlib.sha256(part).digest())
    digest.update(f"{hypothesis.__version__} {sys.version_info[:3]} {count} {seed_value}".encode())
    return digest.hexdigest()[:32]


def _draw(count: int, seed_value: int) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_specs())
    def collect(spec: dict[str, Any]) -> None:
        cases.append(spec)

    run: Callable[[], None] = collect
    run()
    return cases
