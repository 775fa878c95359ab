"""Graph rewrites done before fusion (inference only)."""

from __future__ import annotations

import numpy as np

from ..graph import Graph


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


def simplify(graph: Graph) -> Graph:
    """Run all inference rewrites in place and drop dead nodes."""
    fold_batchnorm_into_conv(graph)
    graph.prune()
    return graph


