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


# ---------------------------------------------------------------------- L1/L2/LogSum/LogSumExp/Prod


def _reduce_shapes(b, node):  # type: ignore[no-untyped-def]
    """(input shape, keepdims output shape) with the forward's own axes rules (opset, noop_with_empty_axes)."""
    from tvm import te

    from .reduce import reduce_axes_of
    from .registry import Attrs

    x = node.inputs[0]
    s = b.shape(x)
    ins = [te.placeholder(s, b.dtype(x))]
    if len(node.inputs) > 1 and node.inputs[1]:
        ins.append(b.graph.constants[node.inputs[1]])
    axes, noop = reduce_axes_of(node.op, ins, Attrs(node.attrs, node.opset, node.describe()))
    axes = [] if noop else axes
    return s, tuple(1 if i in axes else d for i, d in enumerate(s))


def _spread(b, node, value: str):  # type: ignore[no-untyped-def]
    """A reduction-shaped value (output or gradient) broadcast back to the input shape."""
    s, keep = _reduce_shapes(b, node)
    return b.broadcast_to(b.reshape(value, keep), s)


@adjoint("ReduceL1", nondiff=(1,))
def _reduce_l1_adj(b, node, g):  # type: ignore[no-untyped-def]
    """d sum|x| = sign(x)."""
    return [b.mul(_spread(b, node, g[0]), b.op("Sign", node.inputs[0])), None]


@adjoint("ReduceL2", nondiff=(1,))
def _reduce_l2_adj(b, node, g):  # type: ignore[no-untyped-def]
    """d sqrt(sum x^2) = x / y (not finite where the whole reduced slice is zero)."""
    x, y = node.inputs[0], node.outputs[0]
    return [b.mul(_spread(b, node, g[0]), b.op("Div", x, _spread(b, node, y))), None]


@adjoint("ReduceLogSum", nondiff=(1,))
def _reduce_log_sum_adj(b, node, g):  # type: ignore[no-untyped-def]
    """d log(sum x) = 1 / sum x = exp(-y)."""
    return [b.mul(_spread(b, node, g[0]), b.op("Exp", b.neg(_spread(b, node, node.outputs[0])))), None]


@adjoint("ReduceLogSumExp", nondiff=(1,))
def _reduce_log_sum_exp_adj(b, node, g):  # type: ignore[no-untyped-def]
    """d log(sum exp x) = exp(x - y) (the softmax over the reduced axes)."""
    x = node.inputs[0]
    return [b.mul(_spread(b, node, g[0]), b.op("Exp", b.op("Sub", x, _spread(b, node, node.outputs[0])))), None]


@adjoint("ReduceProd", nondiff=(1,))
def _reduce_prod_adj(b, node, g):  # type: ignore[no-untyped-def]
    """d prod(x) / dx_i = product of the other elements, exact with zeros.

    With zeros replaced by ones (xs), p = prod(xs) and z = the number of zeros in the slice: the
    gradient is p / x_i when z == 0, p at the single zero when z == 1, and 0 otherwise.
    """
    x = node.inputs[0]
    s, keep = _reduce_shapes(b, node)
    if keep == s:  # no-op reduction: the identity
        return [g[0] if b.shape(g[0]) == s else b.reshape(g[0], s), None]
    zero, one = b.scalar(0.0, x), b.scalar(1.0, x)
    xs = b.op("Select", x, zero, one, x, cmp="eq")
    axes = [i for i, (d, k) in enumerate(zip(s, keep)) if k == 1 and d != 1]
    p = _reduce_keep(b, "ReduceProd", xs, axes)
    z = b.sum_to(b.op("Select", x, zero, one, zero, cmp="eq"), keep)
    p = b.broadcast_to(p, s)
    z = b.broadcast_to(z, s)
    nonzero_part = b.op("Select", z, zero, b.op("Div", p, xs), zero, cmp="eq")
    zero_part = b.op("Select", z, one, p, zero, cmp="eq")
    local = b.op("Select", x, zero, zero_part, nonzero_part, cmp="eq")
    return [b.mul(_spread(b, node, g[0]), local), None]


def _reduce_keep(b, op_type: str, x: str, axes: list[int]) -> str:  # type: ignore[no-untyped-def]
    """A keepdims ``op_type`` reduction of ``x`` over ``axes`` (axes as attribute or input, per opset)."""
    import numpy as np

    if b.graph.opset >= 18:
        return b.op(op_type, x, b.const(np.array(axes, dtype=np.int64), hint="axes"), keepdims=1)
    return b.op(op_type, x, axes=axes, keepdims=1)


# ---------------------------------------------------------------------- index-valued and one-hot outputs


@adjoint(["ArgMax", "ArgMin", "Hardmax"], nondiff=(0,))
def _piecewise_constant_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Indices (ArgMax/ArgMin) and one-hot maxima (Hardmax) are piecewise constant: zero gradient."""
    return [None]
