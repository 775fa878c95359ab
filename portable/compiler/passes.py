"""Graph rewrites done before fusion (inference only)."""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

from ..graph import Graph
from .layout import convert_to_nchwc


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
        single_use = len(consumers.get(bn.inputs[0], [])) == 1 and bn.inputs[0] not in graph.outputs
        if conv is None or conv.op != "Conv" or not single_use:
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
    block = uses_nchwc(target)
    if block:
        convert_to_nchwc(graph, block)
    graph.prune()
    return graph


def copy_graph(graph: Graph) -> Graph:
    """A copy that passes may rewrite without touching the caller's graph (constants shared)."""
    out = copy.copy(graph)
    out.nodes = copy.deepcopy(graph.nodes)
    out.inputs, out.outputs = list(graph.inputs), list(graph.outputs)
    out.values, out.constants, out.params = dict(graph.values), dict(graph.constants), set(graph.params)
    return out


