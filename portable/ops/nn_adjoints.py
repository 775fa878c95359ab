"""Adjoints of the pooling and softmax-family operators (forward algorithms in nn.py / reduce.py)."""

from __future__ import annotations

from tvm import te

from ..autodiff.registry import adjoint
from .registry import Attrs


def _geometry(b, node):  # type: ignore[no-untyped-def]
    from .nn import pool_geometry

    x = node.inputs[0]
    geo = pool_geometry(Attrs(node.attrs, node.opset, node.describe()), te.placeholder(b.shape(x), b.dtype(x)))
    if len(geo.kernel) != 2:
        raise ValueError(f"{node.describe()}: gradients of pooling are implemented for 2-D inputs only")
    (pt, pb), (pl, pr) = geo.pads
    return {"kernel_shape": geo.kernel, "strides": geo.strides, "dilations": geo.dilations,
            "pads": [pt, pl, pb, pr]}


@adjoint("MaxPool")
def _max_pool_adj(b, node, g):  # type: ignore[no-untyped-def]
    """The gradient of each window goes to the input element(s) equal to the window maximum."""
    return [b.op("MaxPoolGrad", node.inputs[0], node.outputs[0], g[0], **_geometry(b, node))]


@adjoint("AveragePool")
def _avg_pool_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Each window spreads its gradient evenly over the elements it averaged."""
    geo = _geometry(b, node)
    return [b.op("AveragePoolGrad", g[0], input_shape=list(b.shape(node.inputs[0])),
                 count_include_pad=int(node.attrs.get("count_include_pad", 0)), **geo)]


@adjoint("GlobalAveragePool")
def _gap_adj(b, node, g):  # type: ignore[no-untyped-def]
    s = b.shape(node.inputs[0])
    area = 1
    for d in s[2:]:
        area *= d
    return [b.broadcast_to(b.scale(g[0], 1.0 / area), s)]


@adjoint("GlobalMaxPool")
def _gmp_adj(b, node, g):  # type: ignore[no-untyped-def]
    x, y = node.inputs[0], node.outputs[0]
    return [b.op("Select", x, y, b.broadcast_to(g[0], b.shape(x)), b.scalar(0.0, x), cmp="eq")]


def _softmax_axes_shape(b, node):  # type: ignore[no-untyped-def]
    """Shape of a keepdims sum over the softmax axis (or the trailing axes before opset 13)."""
    s = b.shape(node.inputs[0])
    legacy = node.opset < 13
    axis = int(node.attrs.get("axis", 1 if legacy else -1))
    axis = axis + len(s) if axis < 0 else axis
    if legacy:
        return s[:axis] + (1,) * (len(s) - axis)
    return s[:axis] + (1,) + s[axis + 1:]


@adjoint("Softmax")
def _softmax_adj(b, node, g):  # type: ignore[no-untyped-def]
    """dx = y * (g - sum(g * y, axis))."""
    y = node.outputs[0]
    dot = b.sum_to(b.mul(g[0], y), _softmax_axes_shape(b, node))
    return [b.mul(y, b.op("Sub", g[0], dot))]


@adjoint("LogSoftmax")
def _log_softmax_adj(b, node, g):  # type: ignore[no-untyped-def]
    """dx = g - exp(y) * sum(g, axis)."""
    y = node.outputs[0]
    total = b.sum_to(g[0], _softmax_axes_shape(b, node))
    return [b.op("Sub", g[0], b.mul(b.op("Exp", y), total))]
