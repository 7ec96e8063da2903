"""The operators a model uses, in every graph and subgraph, by domain."""

from __future__ import annotations

from onnx import ModelProto

from nimify.model import graph_walk


def _domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def used_ops(model: ModelProto) -> list[tuple[str, str]]:
    """Distinct (domain, op_type) pairs of every node, subgraphs included, sorted; model-local functions
    excluded."""
    local = {(f.domain, f.name) for f in model.functions}
    found = {(_domain(n.domain), n.op_type) for n in graph_walk.nodes(model)}
    return sorted(found - local)


def qualified(domain: str, op: str) -> str:
    return op if domain == "" else f"{domain}::{op}"


def op_types(model: ModelProto) -> list[str]:
    return sorted({qualified(domain, op) for domain, op in used_ops(model)})
