"""Adjoints of the data-movement operators (forward algorithms in movement.py).

Layout changes map the gradient back with the inverse layout change; slicing-like operators
scatter it into zeros (SliceGrad, GatherGrad); Concat/Split are each other's adjoint.
"""

from __future__ import annotations

import numpy as np
from tvm import te

from ..autodiff.registry import adjoint
from .registry import Attrs


@adjoint(["Reshape", "Flatten", "Squeeze", "Unsqueeze"], nondiff=(1,))
def _reshape_adj(b, node, g):  # type: ignore[no-untyped-def]
    return [b.reshape(g[0], b.shape(node.inputs[0])), None]


@adjoint("Identity")
def _identity_adj(b, node, g):  # type: ignore[no-untyped-def]
    return [g[0]]


@adjoint("Transpose")
def _transpose_adj(b, node, g):  # type: ignore[no-untyped-def]
    rank = len(b.shape(node.inputs[0]))
    perm = list(node.attrs.get("perm", list(range(rank))[::-1]))
    return [b.transpose(g[0], list(np.argsort(perm)))]


@adjoint(["Expand", "Tile"], nondiff=(1,))
def _expand_adj(b, node, g):  # type: ignore[no-untyped-def]
    x = node.inputs[0]
    if node.op == "Expand":
        return [b.unbroadcast(g[0], x), None]
    s = b.shape(x)
    reps = [int(r) for r in b.graph.constants[node.inputs[1]].reshape(-1)]
    split = tuple(v for r, d in zip(reps, s) for v in (r, d))  # (rep0, d0, rep1, d1, ...)
    summed = b.sum_to(b.reshape(g[0], split), tuple(v for d in s for v in (1, d)))
    return [b.reshape(summed, s), None]


def _axis(node, rank: int) -> int:  # type: ignore[no-untyped-def]
    a = int(node.attrs.get("axis", 0))
    return a + rank if a < 0 else a


@adjoint("Concat")
def _concat_adj(b, node, g):  # type: ignore[no-untyped-def]
    rank = len(b.shape(g[0]))
    axis, start, out = _axis(node, rank), 0, []
    for name in node.inputs:
        n = b.shape(name)[axis]
        c = [b.const(np.array([v], dtype=np.int64), hint="sl") for v in (start, start + n, axis)]
        out.append(b.op("Slice", g[0], *c))
        start += n
    return out


@adjoint("Split", nondiff=(1,))
def _split_adj(b, node, g):  # type: ignore[no-untyped-def]
    x = node.inputs[0]
    axis = _axis(node, len(b.shape(x)))
    parts = []
    for info, gi in zip(b.output_infos(node), g):
        parts.append(gi if gi is not None else b.const(np.zeros(info.shape, info.dtype), hint="zero"))
    return [b.op("Concat", *parts, axis=axis) if len(parts) > 1 else parts[0], None]


@adjoint("Slice", nondiff=(1, 2, 3, 4))
def _slice_adj(b, node, g):  # type: ignore[no-untyped-def]
    from .movement import _slice_params

    x = node.inputs[0]
    s = b.shape(x)
    ins = [None] + [b.graph.constants[i] if i else None for i in node.inputs[1:]]
    starts, ends, axes, steps = _slice_params(ins, Attrs(node.attrs, node.opset, node.describe()), len(s))
    begin, step = [0] * len(s), [1] * len(s)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        begin[ax], _, step[ax] = slice(st, en, sp).indices(s[ax])
    return [b.op("SliceGrad", g[0], input_shape=list(s), begin=begin, step=step)]


@adjoint("Pad", nondiff=(1, 2, 3))
def _pad_adj(b, node, g):  # type: ignore[no-untyped-def]
    from .movement import _pad_params

    if node.attrs.get("mode", "constant") != "constant":
        raise ValueError(f"{node.describe()}: gradients are implemented for constant padding only")
    x = node.inputs[0]
    s = b.shape(x)
    ins = [te.placeholder(s, b.dtype(x))] + [b.graph.constants[i] if i else None for i in node.inputs[1:]]
    lo, _ = _pad_params(ins, Attrs(node.attrs, node.opset, node.describe()), len(s))
    c = [b.const(np.array(v, dtype=np.int64), hint="sl") for v in (lo, [p + d for p, d in zip(lo, s)])]
    return [b.op("Slice", g[0], *c)]


@adjoint("Gather", nondiff=(1,))
def _gather_adj(b, node, g):  # type: ignore[no-untyped-def]
    x, idx = node.inputs[:2]
    axis = _axis(node, len(b.shape(x)))
    return [b.op("GatherGrad", idx, g[0], axis=axis, input_shape=list(b.shape(x))), None]
