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


def _channel_window_mean(b, v: str, size: int, before: int, after: int) -> str:  # type: ignore[no-untyped-def]
    """Mean over a window [c - before, c + after] along channels of N x C x spatial ``v`` (zeros outside)."""
    s = b.shape(v)
    rest = 1
    for d in s[2:]:
        rest *= d
    col = b.reshape(v, (s[0], 1, s[1], rest))
    avg = b.op("AveragePool", col, kernel_shape=[size, 1], pads=[before, 0, after, 0], count_include_pad=1)
    return b.reshape(avg, s)


@adjoint("LRN")
def _lrn_adj(b, node, g):  # type: ignore[no-untyped-def]
    """y = x * S^-beta, S = bias + alpha * window-mean(x^2):
    dx = g * S^-beta - 2 * alpha * beta / size * x * window-sum'(g * x * S^(-beta-1)), where the
    transposed window [c - after, c + before] collects every channel whose window holds c."""
    x = node.inputs[0]
    size = int(node.attrs.get("size"))
    alpha, beta, bias = (float(node.attrs.get(k, v)) for k, v in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    big_s = b.op("Add", b.scalar(bias, x), b.scale(_channel_window_mean(b, b.mul(x, x), size, before, after), alpha))
    direct = b.mul(g[0], b.op("Pow", big_s, b.scalar(-beta, x)))
    t = b.mul(b.mul(g[0], x), b.op("Pow", big_s, b.scalar(-beta - 1.0, x)))
    back = _channel_window_mean(b, t, size, after, before)  # mean = sum / size
    return [b.op("Sub", direct, b.scale(b.mul(x, back), 2.0 * alpha * beta))]
