"""Convolutions: Conv (1-D/2-D, groups, dilation, pads, auto_pad) and ConvTranspose.

The algorithm is a direct convolution over a zero-padded input; the padding is its own
injective stage (``pad``) which schedules inline into the reduction (``conv``, tag ``anchor``).
1-D convolutions are 2-D ones with a unit height. Bias is an elementwise epilogue stage.
"""

from __future__ import annotations

from typing import Sequence

from tvm import te, tirx

from .common import const
from .registry import Attrs, Pattern, register, shape_of


def conv_pads(attrs: Attrs, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
              dilations: Sequence[int]) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis from ``pads`` or ``auto_pad``."""
    nd = len(in_sizes)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            total = max(0, ((size + s - 1) // s - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            out.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return out
    if auto == "VALID":
        return [(0, 0)] * nd
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    return [(pads[i], pads[i + nd]) for i in range(nd)]


def pad_nchw(x: te.Tensor, pads: Sequence[tuple[int, int]], value: float = 0.0, name: str = "pad") -> te.Tensor:
    """Pad the trailing spatial axes of an N, C, spatial... tensor with a constant."""
    if all(p == (0, 0) for p in pads):
        return x
    shape = shape_of(x)
    lead = len(shape) - len(pads)
    out_shape = shape[:lead] + tuple(s + b + e for s, (b, e) in zip(shape[lead:], pads))

    def body(*idx):  # type: ignore[no-untyped-def]
        conds, src = [], list(idx[:lead])
        for i, (s, (b, _)) in enumerate(zip(shape[lead:], pads)):
            v = idx[lead + i]
            conds += [v >= b, v < b + s]
            src.append(v - b)
        return tirx.if_then_else(tirx.all(*conds), x[tuple(src)], const(value, x.dtype))

    return te.compute(out_shape, body, name=name, tag="injective")


def conv2d_nchw(x: te.Tensor, w: te.Tensor, strides: Sequence[int], pads: Sequence[tuple[int, int]],
                dilations: Sequence[int], groups: int) -> te.Tensor:
    """Direct grouped 2-D convolution, NCHW data and OIHW weights."""
    n, c, h, wd = shape_of(x)
    oc, icg, kh, kw = shape_of(w)
    if c != icg * groups:
        raise ValueError(f"input channels {c} != weight in-channels {icg} x groups {groups}")
    if oc % groups:
        raise ValueError(f"output channels {oc} not divisible by groups {groups}")
    xp = pad_nchw(x, pads)
    (sh, sw), (dh, dw) = strides, dilations
    oh = (h + pads[0][0] + pads[0][1] - (kh - 1) * dh - 1) // sh + 1
    ow = (wd + pads[1][0] + pads[1][1] - (kw - 1) * dw - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"kernel {kh}x{kw} larger than padded input {h}x{wd}")
    ocg = oc // groups
    rc = te.reduce_axis((0, icg), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def body(b, o, i, j):  # type: ignore[no-untyped-def]
        ci = rc if groups == 1 else (o // ocg) * icg + rc
        return te.sum(xp[b, ci, i * sh + ry * dh, j * sw + rx * dw] * w[o, rc, ry, rx], axis=[rc, ry, rx])

    return te.compute((n, oc, oh, ow), body, name="conv", tag="anchor")


def _as_2d(t: te.Tensor, name: str) -> te.Tensor:
    s = shape_of(t)
    return te.compute((s[0], s[1], 1, s[2]), lambda a, b, _, d: t[a, b, d], name=name, tag="injective")


def _spatial_params(attrs: Attrs, x: te.Tensor, w: te.Tensor) -> tuple[list[int], list[int], list[int]]:
    nd = len(x.shape) - 2
    kernel = list(attrs.get("kernel_shape", shape_of(w)[2:]))
    strides = list(attrs.get("strides", [1] * nd))
    dil = list(attrs.get("dilations", [1] * nd))
    return kernel, strides, dil


def _bias_add(y: te.Tensor, bias: te.Tensor | None) -> te.Tensor:
    if bias is None:
        return y
    return te.compute(shape_of(y), lambda *i: y[i] + bias[i[1]], name="bias_add", tag="elemwise")


@register("Conv", Pattern.ANCHOR, "conv2d")
def conv(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Conv for 1-D and 2-D inputs."""
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    nd = len(x.shape) - 2
    if nd not in (1, 2) or len(w.shape) != nd + 2:
        raise attrs.fail(f"only 1-D and 2-D convolutions are supported (X {shape_of(x)}, W {shape_of(w)})")
    kernel, strides, dil = _spatial_params(attrs, x, w)
    if list(shape_of(w)[2:]) != kernel:
        raise attrs.fail(f"kernel_shape {kernel} differs from weight shape {shape_of(w)}")
    pads = conv_pads(attrs, shape_of(x)[2:], kernel, strides, dil)
    groups = int(attrs.get("group", 1))
    if nd == 1:
        x, w = _as_2d(x, "x2d"), _as_2d(w, "w2d")
        strides, dil, pads = [1, *strides], [1, *dil], [(0, 0), *pads]
    try:
        y = conv2d_nchw(x, w, strides, pads, dil, groups)
    except ValueError as exc:
        raise attrs.fail(str(exc)) from exc
    if nd == 1:
        y2 = y
        y = te.compute((y2.shape[0], y2.shape[1], y2.shape[3]), lambda a, b, d: y2[a, b, 0, d],
                       name="conv1d_squeeze", tag="injective")
    return [_bias_add(y, bias)]


@register("ConvTranspose", Pattern.ANCHOR, "conv2d_transpose")
def conv_transpose(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX ConvTranspose (1-D/2-D/3-D, groups, dilations, pads, output_padding, output_shape)."""
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    nd = len(x.shape) - 2
    if nd < 1 or len(w.shape) != nd + 2:
        raise attrs.fail(f"X {shape_of(x)} and W {shape_of(w)} must both have rank >= 3 and equal ranks")
    xs, ws = shape_of(x), shape_of(w)
    n, c, sizes = xs[0], xs[1], xs[2:]
    cin, ocg, ks = ws[0], ws[1], ws[2:]
    groups = int(attrs.get("group", 1))
    if cin != c or c % groups:
        raise attrs.fail(f"weight in-channels {cin} must equal input channels {c}, divisible by group {groups}")
    strides = list(attrs.get("strides", [1] * nd))
    dil = list(attrs.get("dilations", [1] * nd))
    opad = list(attrs.get("output_padding", [0] * nd))
    pads, out_sizes = _conv_transpose_pads(attrs, sizes, ks, strides, dil, opad)
    oc, icg = ocg * groups, c // groups
    rc = te.reduce_axis((0, icg), name="rc")
    rk = [te.reduce_axis((0, k), name=f"rk{i}") for i, k in enumerate(ks)]

    def body(b, o, *sp):  # type: ignore[no-untyped-def]
        g = o // ocg
        conds, src = [], []
        for i in range(nd):
            v = sp[i] + pads[i] - rk[i] * dil[i]
            conds += [v >= 0, tirx.floormod(v, strides[i]) == 0, tirx.floordiv(v, strides[i]) < sizes[i]]
            src.append(v)
        ok = tirx.all(*conds)
        xi = [tirx.floordiv(v, s) * ok for v, s in zip(src, strides)]
        v = tirx.if_then_else(ok, x[(b, g * icg + rc, *xi)] * w[(g * icg + rc, o - g * ocg, *rk)],
                              const(0, x.dtype))
        return te.sum(v, axis=[rc, *rk])

    y = te.compute((n, oc, *out_sizes), body, name="conv_transpose", tag="anchor")
    return [_bias_add(y, bias)]


def _conv_transpose_pads(attrs: Attrs, sizes: Sequence[int], ks: Sequence[int], strides: Sequence[int],
                         dil: Sequence[int], opad: Sequence[int]) -> tuple[list[int], list[int]]:
    """Leading pad per spatial axis and output sizes, as the ONNX spec (and its reference) define them."""
    nd = len(sizes)
    full = [(sizes[i] - 1) * strides[i] + (ks[i] - 1) * dil[i] + 1 + opad[i] for i in range(nd)]
    auto = attrs.get("auto_pad", "NOTSET")
    if "output_shape" in attrs or auto in ("SAME_UPPER", "SAME_LOWER"):
        if "output_shape" in attrs:
            out = list(attrs.get("output_shape"))[-nd:]
        else:
            out = [sizes[i] * strides[i] for i in range(nd)]
        total = [full[i] - out[i] for i in range(nd)]
        lead = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        return lead, out
    p = list(attrs.get("pads", [0] * (2 * nd)))
    return p[:nd], [full[i] - p[i] - p[i + nd] for i in range(nd)]


# ---------------------------------------------------------------------- adjoints (reverse-mode rules)
from ..autodiff.registry import adjoint  # noqa: E402


def _adj_operands(b, node):  # type: ignore[no-untyped-def]
    """(X, W, bias or None, X's shape, W's shape, number of spatial axes) of a Conv/ConvTranspose node."""
    x, w = node.inputs[:2]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    sx, sw = b.shape(x), b.shape(w)
    return x, w, bias, sx, sw, len(sx) - 2


@adjoint("Conv")
def _conv_adj(b, node, g):  # type: ignore[no-untyped-def]
    """dX = ConvDataGrad(dY, W), dW = ConvWeightGrad(X, dY) (both in portable/ops/training.py)."""
    x, w, bias, sx, sw, nd = _adj_operands(b, node)
    attrs = Attrs(node.attrs, node.opset, node.describe())
    kernel = list(sw[2:])
    strides = list(node.attrs.get("strides", [1] * nd))
    dil = list(node.attrs.get("dilations", [1] * nd))
    pads = conv_pads(attrs, sx[2:], kernel, strides, dil)
    gy = g[0]
    sg = b.shape(gy)
    if nd == 1:  # run the 2-D rules on a unit-height view
        x4, w4 = b.reshape(x, (sx[0], sx[1], 1, sx[2])), b.reshape(w, (sw[0], sw[1], 1, sw[2]))
        gy = b.reshape(gy, (sg[0], sg[1], 1, sg[2]))
        kernel, strides, dil, pads = [1, *kernel], [1, *strides], [1, *dil], [(0, 0), *pads]
    else:
        x4, w4 = x, w
    s4 = b.shape(x4)
    flat = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
    common = {"strides": strides, "dilations": dil, "pads": flat, "group": int(node.attrs.get("group", 1))}
    gx = gw = gb = None
    if b.needs(0):
        gx = b.reshape(b.op("ConvDataGrad", gy, w4, input_shape=list(s4), kernel_shape=kernel, **common), sx)
    if b.needs(1):
        gw = b.reshape(b.op("ConvWeightGrad", x4, gy, kernel_shape=kernel, **common), sw)
    if bias is not None and b.needs(2):
        gb = b.reshape(b.sum_to(g[0], (sw[0],) + (1,) * nd), (sw[0],))
    return [gx, gw, gb]


def _conv_transpose_adj_geometry(b, node):  # type: ignore[no-untyped-def]
    """(strides, dilations, leading pads, trailing pads) of the Conv that is a ConvTranspose's adjoint.

    ConvTranspose scatters input position q to output q*s + k*d - lead; the Conv reading the output
    gradient at those positions needs the same leading pad and a trailing pad giving back the
    input's spatial size (any value in [need, need + stride) does; the smallest non-negative one).
    """
    _, _, _, sx, sw, nd = _adj_operands(b, node)
    attrs = Attrs(node.attrs, node.opset, node.describe())
    strides = list(node.attrs.get("strides", [1] * nd))
    dil = list(node.attrs.get("dilations", [1] * nd))
    opad = list(node.attrs.get("output_padding", [0] * nd))
    lead, out = _conv_transpose_pads(attrs, sx[2:], sw[2:], strides, dil, opad)
    trail = []
    for i in range(nd):
        need = (sx[2 + i] - 1) * strides[i] + (sw[2 + i] - 1) * dil[i] + 1 - out[i] - lead[i]
        if lead[i] < 0 or need + strides[i] <= 0:
            raise attrs.fail(f"gradients need a non-negative padding along spatial axis {i} "
                             f"(leading pad {lead[i]}, output size {out[i]})")
        trail.append(max(need, 0))
    return strides, dil, lead, trail


@adjoint("ConvTranspose")
def _conv_transpose_adj(b, node, g):  # type: ignore[no-untyped-def]
    """dX = Conv(dY, W) and dW = ConvWeightGrad(dY, X), with ConvTranspose's geometry (1-D and 2-D)."""
    x, w, bias, sx, sw, nd = _adj_operands(b, node)
    if nd not in (1, 2):
        raise ValueError(f"{node.describe()}: gradients of ConvTranspose are implemented for 1-D and 2-D only")
    strides, dil, lead, trail = _conv_transpose_adj_geometry(b, node)
    group = int(node.attrs.get("group", 1))
    gy = g[0]
    gx = gw = gb = None
    if b.needs(0):
        gx = b.op("Conv", gy, w, kernel_shape=list(sw[2:]), strides=strides, dilations=dil, pads=lead + trail,
                  group=group)
    if b.needs(1):
        sg = b.shape(gy)
        x4, gy4, kernel = x, gy, list(sw[2:])
        if nd == 1:  # the 2-D weight gradient on a unit-height view
            x4 = b.reshape(x, (sx[0], sx[1], 1, sx[2]))
            gy4 = b.reshape(gy, (sg[0], sg[1], 1, sg[2]))
            kernel, strides, dil, lead, trail = [1, *kernel], [1, *strides], [1, *dil], [0, *lead], [0, *trail]
        flat = [lead[0], lead[1], trail[0], trail[1]]
        gw = b.reshape(b.op("ConvWeightGrad", gy4, x4, kernel_shape=kernel, strides=strides, dilations=dil,
                            pads=flat, group=group), sw)
    if bias is not None and b.needs(2):
        oc = b.shape(gy)[1]
        gb = b.reshape(b.sum_to(gy, (oc,) + (1,) * nd), (oc,))
    return [gx, gw, gb]
