"""Adjoints of the reductions (forward algorithms in reduce.py)."""

from __future__ import annotations

from ..autodiff.registry import adjoint


def _keep_shape(b, node):  # type: ignore[no-untyped-def]
    """(input shape, keepdims output shape) of a reduction node."""
    s = b.shape(node.inputs[0])
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = [int(a) for a in b.graph.constants[node.inputs[1]].reshape(-1)]
    else:
        axes = [int(a) for a in node.attrs.get("axes", [])]
    if not axes:
        noop = node.opset >= 13 and bool(node.attrs.get("noop_with_empty_axes", 0)) and node.op == "ReduceSum"
        axes = [] if noop else list(range(len(s)))
    axes = [a + len(s) if a < 0 else a for a in axes]
    return s, tuple(1 if i in axes else d for i, d in enumerate(s))


@adjoint(["ReduceSum", "ReduceMean"], nondiff=(1,))
def _reduce_sum_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Broadcast the gradient back over the reduced axes (divided by their size for the mean)."""
    s, keep = _keep_shape(b, node)
    gg = b.reshape(g[0], keep)
    if node.op == "ReduceMean":
        count = 1
        for a, k in zip(s, keep):
            count *= a if k == 1 and a != 1 else 1
        gg = b.scale(gg, 1.0 / count)
    return [b.broadcast_to(gg, s), None]


@adjoint("ReduceSumSquare", nondiff=(1,))
def _reduce_sum_square_adj(b, node, g):  # type: ignore[no-untyped-def]
    s, keep = _keep_shape(b, node)
    x = node.inputs[0]
    return [b.mul(b.broadcast_to(b.reshape(g[0], keep), s), b.scale(x, 2.0)), None]


@adjoint(["ReduceMax", "ReduceMin"], nondiff=(1,))
def _reduce_max_adj(b, node, g):  # type: ignore[no-untyped-def]
    """The gradient goes to the element(s) equal to the extreme value."""
    s, keep = _keep_shape(b, node)
    x = node.inputs[0]
    y = b.reshape(node.outputs[0], keep)
    return [b.op("Select", x, y, b.broadcast_to(b.reshape(g[0], keep), s), b.scalar(0.0, x), cmp="eq"), None]
