"""Adjoints of the normalizations (forward algorithms in normalization.py / elementwise.py).

BatchNormalization in training mode is lowered by the trainer into differentiable primitives
(batch statistics, running-stat updates); the adjoint here is the inference form's.
"""

from __future__ import annotations

from ..autodiff.registry import adjoint


@adjoint("LayerNormalization")
def _layer_norm_adj(b, node, g):  # type: ignore[no-untyped-def]
    """dx = inv * (dxh - mean(dxh) - xh * mean(dxh * xh)), dxh = g * scale, over the normalized axes."""
    x, scale = node.inputs[:2]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    s = b.shape(x)
    axis = int(node.attrs.get("axis", -1))
    axis = axis + len(s) if axis < 0 else axis
    eps = float(node.attrs.get("epsilon", 1e-5))
    red = s[:axis] + (1,) * (len(s) - axis)
    count = 1
    for d in s[axis:]:
        count *= d
    mu = b.scale(b.sum_to(x, red), 1.0 / count)
    xc = b.op("Sub", x, mu)
    var = b.scale(b.sum_to(b.mul(xc, xc), red), 1.0 / count)
    inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.scalar(eps, x))))
    xh = b.mul(xc, inv)
    gx = gs = gb = None
    if b.needs(0):
        dxh = b.mul(g[0], scale)
        m1 = b.scale(b.sum_to(dxh, red), 1.0 / count)
        m2 = b.scale(b.sum_to(b.mul(dxh, xh), red), 1.0 / count)
        gx = b.mul(inv, b.op("Sub", b.op("Sub", dxh, m1), b.mul(xh, m2)))
    if b.needs(1):
        gs = b.unbroadcast(b.mul(g[0], xh), scale)
    if bias is not None and b.needs(2):
        gb = b.unbroadcast(g[0], bias)
    return [gx, gs, gb]


@adjoint("BatchNormalization", nondiff=(3, 4))
def _batch_norm_inference_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Inference form (running statistics are constants): an affine map per channel."""
    if node.attrs.get("training_mode", 0):
        raise ValueError(f"{node.describe()}: training-mode BatchNormalization is lowered by the trainer")
    x, scale, bias, mean, var = node.inputs[:5]
    s = b.shape(x)
    ch = (s[1],) + (1,) * (len(s) - 2)
    eps = float(node.attrs.get("epsilon", 1e-5))
    inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", b.reshape(var, ch), b.scalar(eps, var))))
    gx = b.mul(g[0], b.mul(inv, b.reshape(scale, ch))) if b.needs(0) else None
    gs = None
    if b.needs(1):
        xh = b.mul(b.op("Sub", x, b.reshape(mean, ch)), inv)
        gs = b.reshape(b.sum_to(b.mul(g[0], xh), ch), (s[1],))
    gb = b.reshape(b.sum_to(g[0], ch), (s[1],)) if b.needs(2) else None
    return [gx, gs, gb, None, None]


def _moments(b, x: str, red: tuple, count: int):  # type: ignore[no-untyped-def]
    """(x - mean, biased variance) over the axes where ``red`` is 1 (keepdims shapes)."""
    mu = b.scale(b.sum_to(x, red), 1.0 / count)
    xc = b.op("Sub", x, mu)
    return xc, b.scale(b.sum_to(b.mul(xc, xc), red), 1.0 / count)


@adjoint("InstanceNormalization")
def _instance_norm_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Layer-norm rule per (n, c) over the spatial axes; scale and bias are per channel."""
    x, scale, bias = node.inputs[:3]
    s = b.shape(x)
    eps = float(node.attrs.get("epsilon", 1e-5))
    red = s[:2] + (1,) * (len(s) - 2)
    ch = (s[1],) + (1,) * (len(s) - 2)
    count = 1
    for d in s[2:]:
        count *= d
    xc, var = _moments(b, x, red, count)
    inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.scalar(eps, x))))
    xh = b.mul(xc, inv)
    gx = gs = gb = None
    if b.needs(0):
        dxh = b.mul(g[0], b.reshape(scale, ch))
        m1 = b.scale(b.sum_to(dxh, red), 1.0 / count)
        m2 = b.scale(b.sum_to(b.mul(dxh, xh), red), 1.0 / count)
        gx = b.mul(inv, b.op("Sub", b.op("Sub", dxh, m1), b.mul(xh, m2)))
    if b.needs(1):
        gs = b.reshape(b.sum_to(b.mul(g[0], xh), ch), (s[1],))
    if b.needs(2):
        gb = b.reshape(b.sum_to(g[0], ch), (s[1],))
    return [gx, gs, gb]


@adjoint("MeanVarianceNormalization")
def _mvn_adj(b, node, g):  # type: ignore[no-untyped-def]
    """y = xc / d, d = sigma + 1e-9: dx = (g - mean(g)) / d - xc * sum(g * xc) / (d^2 * n * sigma).

    Not finite where a normalized slice is constant (sigma = 0), like the forward's sensitivity.
    """
    x = node.inputs[0]
    s = b.shape(x)
    axes = {int(a) + len(s) if int(a) < 0 else int(a) for a in node.attrs.get("axes", [0, 2, 3])}
    red = tuple(1 if i in axes else d for i, d in enumerate(s))
    count = 1
    for a in axes:
        count *= s[a]
    xc, var = _moments(b, x, red, count)
    sigma = b.op("Sqrt", var)
    d = b.op("Add", sigma, b.scalar(1e-9, x))
    centred = b.op("Sub", g[0], b.scale(b.sum_to(g[0], red), 1.0 / count))
    coef = b.op("Div", b.sum_to(b.mul(g[0], xc), red), b.scale(b.mul(b.mul(d, d), sigma), float(count)))
    return [b.op("Sub", b.op("Div", centred, d), b.mul(xc, coef))]
