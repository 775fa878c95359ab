"""Reverse-mode differentiation over a Graph.

Only the nodes on a path from a ``wrt`` value to the differentiated outputs get their adjoints
emitted; a value read by several nodes gets the sum (Add nodes) of its gradient contributions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ModelError
from ..graph import Graph
from .builder import GradBuilder
from .registry import get_adjoint


def _depends_on(graph: Graph, sources: set[str]) -> set[str]:
    """Values computed (transitively) from ``sources``."""
    reach = set(sources)
    for n in graph.nodes:
        if any(i in reach for i in n.inputs if i):
            reach.update(o for o in n.outputs if o)
    return reach


def _feeds(graph: Graph, targets: set[str]) -> set[str]:
    """Values that (transitively) feed ``targets``."""
    need = set(targets)
    for n in reversed(graph.nodes):
        if any(o in need for o in n.outputs):
            need.update(i for i in n.inputs if i)
    return need


def differentiable_path(graph: Graph, outputs: Sequence[str], wrt: Sequence[str]) -> set[str]:
    """Values on some path from a ``wrt`` value to an output."""
    return _depends_on(graph, set(wrt)) & _feeds(graph, set(outputs))


def backward(graph: Graph, outputs: Sequence[str], seeds: Sequence[str], wrt: Sequence[str],
             builder: GradBuilder | None = None) -> dict[str, str]:
    """Append the backward pass to ``graph``; returns wrt value -> name of its gradient value.

    ``seeds[i]`` is the gradient flowing into ``outputs[i]`` (same shape). A ``wrt`` value that
    does not influence any output gets a zero gradient constant.
    """
    b = builder or GradBuilder(graph)
    for w in wrt:
        if w not in graph.values:
            raise ModelError(f"cannot differentiate with respect to {w!r}: no such value in the graph")
    path = differentiable_path(graph, outputs, wrt)
    contrib: dict[str, list[str]] = {}
    for o, s in zip(outputs, seeds):
        if o in path:
            contrib.setdefault(o, []).append(s)
    forward = list(graph.nodes)
    for node in reversed(forward):
        if not any(o in contrib for o in node.outputs):
            continue
        live = [i for i, name in enumerate(node.inputs) if name and name in path]
        if not live:
            continue
        adj = get_adjoint(node.op)
        if adj is None:
            raise ModelError(f"{node.describe()}: operator {node.op} has no adjoint, so gradients cannot flow "
                             f"through it (to {[node.inputs[i] for i in live]})")
        live = [i for i in live if i not in adj.nondiff_inputs]
        if not live:
            continue
        b.wanted = set(live)
        gouts = [_take(b, contrib, o) if o else None for o in node.outputs]
        gins = adj.fn(b, node, gouts)
        for i in live:
            g = gins[i] if i < len(gins) else None
            if g is None:
                continue
            name = node.inputs[i]
            if b.shape(g) != b.shape(name):
                raise ModelError(f"{node.describe()}: adjoint produced a gradient of shape {b.shape(g)} for input "
                                 f"{i} ({name!r}) of shape {b.shape(name)}")
            contrib.setdefault(name, []).append(g)
    result = {}
    for w in wrt:
        parts = contrib.get(w, [])
        if parts:
            result[w] = _accumulate(b, parts)
        else:
            info = graph.values[w]
            result[w] = b.const(np.zeros(info.shape, dtype=info.dtype), hint="zero_grad")
    return result


def _take(b: GradBuilder, contrib: dict[str, list[str]], value: str) -> str | None:
    """The summed gradient of ``value``; kept (summed) in ``contrib`` so a wrt value can still read it."""
    total = _accumulate(b, contrib.get(value, []))
    if total is not None:
        contrib[value] = [total]
    return total


def _accumulate(b: GradBuilder, parts: list[str]) -> str | None:
    """Sum of gradient contributions (None when there are none)."""
    if not parts:
        return None
    total = parts[0]
    for p in parts[1:]:
        total = b.add(total, p)
    return total
