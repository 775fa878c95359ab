"""Graph rewrites done before fusion (inference only)."""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import numpy as np

from ..graph import Graph, Node
from .layout import convert_to_nchwc


def _single_use(graph: Graph, consumers: dict[str, list[Node]], value: str) -> bool:
    """True if ``value`` has exactly one consumer and is not a graph output (so a rewrite may absorb it)."""
    return len(consumers.get(value, [])) == 1 and value not in graph.outputs


def fold_batchnorm_into_conv(graph: Graph) -> int:
    """Rewrite Conv(W, b) -> BatchNormalization(inference) into one Conv with scaled weights.

    Returns the number of BatchNormalization nodes removed. Only constant weights and BN
    statistics are folded; anything else is left for the elementwise fusion.
    """
    producers = graph.producers()
    consumers = graph.consumers()  # computed once: each BN reads its conv's original output
    consts = graph.constants
    removed: set[int] = set()
    folded = 0
    for bn in graph.nodes:
        if bn.op != "BatchNormalization" or bn.attrs.get("training_mode", 0) or len(bn.outputs) > 1:
            continue
        conv = producers.get(bn.inputs[0])
        if conv is None or conv.op != "Conv" or not _single_use(graph, consumers, bn.inputs[0]):
            continue
        w_name = conv.inputs[1]
        b_name = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else ""
        needed = [w_name, *bn.inputs[1:5]] + ([b_name] if b_name else [])
        if not all(n in consts for n in needed):
            continue
        scale, bias, mean, var = (consts[n].astype(np.float64) for n in bn.inputs[1:5])
        eps = float(bn.attrs.get("epsilon", 1e-5))
        s = scale / np.sqrt(var + eps)
        w = consts[w_name]
        b = consts[b_name].astype(np.float64) if b_name else np.zeros(w.shape[0])
        new_w = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        new_b = ((b - mean) * s + bias).astype(w.dtype)
        wn, bn_name = f"{conv.name}::folded_w", f"{conv.name}::folded_b"
        for name, arr in ((wn, new_w), (bn_name, new_b)):
            consts[name] = arr
            graph.values[name] = type(graph.values[w_name])(tuple(arr.shape), str(arr.dtype))
        conv.inputs = [conv.inputs[0], wn, bn_name]
        # the conv now produces BN's output directly
        conv.outputs = [bn.outputs[0]]
        removed.add(id(bn))
        folded += 1
    graph.nodes = [n for n in graph.nodes if id(n) not in removed]
    return folded


def _scalar(graph: Graph, name: str) -> float | None:
    arr = graph.constants.get(name)
    return float(arr.reshape(-1)[0]) if arr is not None and arr.size == 1 else None


def _close(value: float | None, want: float) -> bool:
    return value is not None and abs(value - want) <= 1e-4 * abs(want)


def fuse_gelu(graph: Graph) -> int:
    """Rewrite exact GELU written out with Erf into one ``Gelu`` node (as exporters emit it).

    Matches ``Mul(Mul(x, 0.5), Add(Erf(Div(x, sqrt2)), 1))`` and ``Mul(Mul(x, Add(...)), 0.5)``
    (``Mul(x, 1/sqrt2)`` for the Div too; operands in either order). The pattern's inner values
    must have no other consumer. One node then joins the producing matmul's epilogue, where the
    written-out form, whose ``x`` has two consumers, ends fusion and costs a kernel of its own.
    Returns the number of GELUs rewritten.
    """
    producers, consumers = graph.producers(), graph.consumers()

    def prod(v: str, op: str) -> Node | None:
        n = producers.get(v)
        return n if n is not None and n.op == op and _single_use(graph, consumers, v) else None

    def split(n: Node, want: float) -> str | None:
        """The non-constant operand of a binary node whose other operand is the scalar ``want``."""
        a, b = n.inputs[:2]
        if _close(_scalar(graph, b), want):
            return a
        if _close(_scalar(graph, a), want):
            return b
        return None

    def erf_branch(v: str) -> tuple[str, list[Node]] | None:
        """x and the nodes of ``Add(Erf(x / sqrt2), 1)`` producing ``v``."""
        add = prod(v, "Add")
        erf_out = split(add, 1.0) if add else None
        erf = prod(erf_out, "Erf") if erf_out else None
        if erf is None:
            return None
        scale = producers.get(erf.inputs[0])
        if scale is None or not _single_use(graph, consumers, erf.inputs[0]):
            return None
        x = (scale.inputs[0] if scale.op == "Div" and _close(_scalar(graph, scale.inputs[1]), math.sqrt(2.0))
             else split(scale, 1 / math.sqrt(2.0)) if scale.op == "Mul" else None)
        return (x, [scale, erf, add]) if x else None

    removed: set[int] = set()
    count = 0
    for node in graph.nodes:
        if node.op != "Mul" or id(node) in removed:
            continue
        found = None
        for a, b in (node.inputs[:2], node.inputs[1::-1]):
            inner = prod(a, "Mul")
            if inner is None:
                continue
            branch = erf_branch(b)
            x = split(inner, 0.5)
            if branch and x and branch[0] == x:  # Mul(Mul(x, 0.5), Add(Erf(x/sqrt2), 1))
                found = (x, branch[1] + [inner])
                break
            if _close(_scalar(graph, b), 0.5):  # Mul(Mul(x, Add(Erf(x/sqrt2), 1)), 0.5)
                for xa, ya in (inner.inputs[:2], inner.inputs[1::-1]):
                    br = erf_branch(ya)
                    if br and br[0] == xa:
                        found = (xa, br[1] + [inner])
                        break
                if found:
                    break
        if not found:
            continue
        x, dead = found
        removed.update(id(n) for n in dead)
        node.op, node.inputs, node.attrs = "Gelu", [x], {"approximate": "none"}
        node.opset = max(node.opset, 20)
        count += 1
    graph.nodes = [n for n in graph.nodes if id(n) not in removed]
    return count


def rewrite_switches(target: Any) -> bytes:
    """What the environment switches make ``simplify`` do for ``target`` (part of the compile-cache key)."""
    return f"nchwc={uses_nchwc(target)};winograd={uses_winograd()}".encode()


def uses_winograd() -> bool:
    """Whether the layout pass may pick Winograd convolutions (PORTABLE_WINOGRAD=0 turns it off)."""
    return os.environ.get("PORTABLE_WINOGRAD", "1") != "0"


def uses_nchwc(target: Any) -> int:
    """Channel block for the NCHWc layout pass on ``target`` (0: keep NCHW).

    CPU targets block by their fp32 SIMD width; PORTABLE_LAYOUT=nchw turns the pass off.
    """
    if target is None or os.environ.get("PORTABLE_LAYOUT", "").lower() == "nchw":
        return 0
    return target.vector_lanes_f32 if target.family == "x86" and target.vector_lanes_f32 >= 8 else 0


def simplify(graph: Graph, target: Any = None) -> Graph:
    """Run all inference rewrites and drop dead nodes; returns a rewritten copy (arrays shared).

    With a ``target`` (a TargetInfo), convolution chains move to that target's NCHWc layout.
    """
    graph = copy_graph(graph)
    fold_batchnorm_into_conv(graph)
    fuse_gelu(graph)
    block = uses_nchwc(target)
    if block:
        convert_to_nchwc(graph, block, winograd=uses_winograd())
    graph.prune()
    return graph


def copy_graph(graph: Graph) -> Graph:
    """A copy that passes may rewrite without touching the caller's graph (constants shared)."""
    out = copy.copy(graph)
    out.nodes = copy.deepcopy(graph.nodes)
    out.inputs, out.outputs = list(graph.inputs), list(graph.outputs)
    out.values, out.constants, out.params = dict(graph.values), dict(graph.constants), set(graph.params)
    return out


