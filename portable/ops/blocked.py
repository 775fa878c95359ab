"""Channel-blocked ("NCHWc") operators, introduced by the compiler's layout pass (never by ONNX).

A blocked tensor of an N x C x H x W value is ``[N, ceil(C / cb), H, W, cb]``: channel ``c`` lives
at ``[.., c // cb, .., .., c % cb]`` and the tail of the last block is zero-padded. With ``cb`` =
the SIMD width (16 fp32 lanes on AVX-512), every innermost run of ``cb`` values is one vector
register of channels, so convolutions and pools vectorise over channels with contiguous loads
whatever their stride or kernel size, and a chain of convolutions never changes layout.

- ``ToNCHWc`` / ``FromNCHWc``: the layout conversions at the boundaries of a blocked region.
- ``NCHWcConv``: 2-D convolution (dense or depthwise) reading a blocked (or, for the first layer,
  a plain NCHW) input and weights packed at compile time; writes a blocked output.
- ``NCHWcMaxPool`` / ``NCHWcAveragePool``: the ONNX pools of ``nn.py`` on a blocked input.

The weight packing lives here too (numpy, done once per model by the layout pass), next to the
algorithm that reads it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tvm import te, tirx

from .common import const, guarded_read
from .nn import pool_geometry, window_average
from .reduce import is_float
from .registry import Attrs, Pattern, register, shape_of


def blocked_channels(channels: int, block: int) -> int:
    """Number of channel blocks holding ``channels`` channels."""
    return -(-channels // block)


def pad_spatial(x: te.Tensor, pads: Sequence[tuple[int, int]], value: float = 0.0, name: str = "pad") -> te.Tensor:
    """Pad axes 2 and 3 (H, W) of an NCHW or NCHWc tensor with a constant."""
    if all(p == (0, 0) for p in pads):
        return x
    shape = shape_of(x)
    out_shape = list(shape)
    for axis, (b, e) in zip((2, 3), pads):
        out_shape[axis] += b + e

    def body(*idx):  # type: ignore[no-untyped-def]
        src, conds = list(idx), []
        for axis, (b, _) in zip((2, 3), pads):
            conds += [idx[axis] >= b, idx[axis] < b + shape[axis]]
            src[axis] = idx[axis] - b
        return tirx.if_then_else(tirx.all(*conds), x[tuple(src)], const(value, x.dtype))

    return te.compute(tuple(out_shape), body, name=name, tag="injective")


# ------------------------------------------------------------------------------------- conversions
def zero_padded_nchw(x: te.Tensor, b: Any, ch: Any, row: Any, col: Any, tail: bool, rows: bool, cols: bool) -> Any:
    """``x[b, ch, row, col]`` of NCHW ``x``, zero outside it. Only the axes flagged may leave ``x``
    (``tail``: ``ch`` past the last channel; ``rows``, ``cols``: either side): those are checked
    and their indices clamped in bounds, so the select (both sides evaluated: a vector blend) is safe
    where if_then_else would branch per lane (136 channels, 28x28 -> [9, 30, 30, 16]: 0.23 ms with
    if_then_else)."""
    _, c, h, w = shape_of(x)
    inside = []
    if tail:
        inside.append(ch < c)
        ch = tirx.min(ch, c - 1)
    if rows:
        inside += [row >= 0, row < h]
        row = tirx.max(tirx.min(row, h - 1), 0)
    if cols:
        inside += [col >= 0, col < w]
        col = tirx.max(tirx.min(col, w - 1), 0)
    value = x[b, ch, row, col]
    return guarded_read(tirx.all(*inside), value, const(0, x.dtype)) if inside else value


@register("ToNCHWc", Pattern.INJECTIVE, "elemwise")
def to_nchwc(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """NCHW -> [N, C/cb, H, W, cb] (attribute ``block``), zero-filling the last block's tail.

    With ``pads`` ``[top, left, bottom, right]`` the result also carries that zero border: the
    padded input of the one convolution reading it, made in the same pass as the conversion.
    """
    x = ins[0]
    n, c, h, w = shape_of(x)
    cb = int(attrs.get("block"))
    top, left, bottom, right = (int(v) for v in attrs.get("pads", [0, 0, 0, 0]))

    def body(b, co, i, j, ci):  # type: ignore[no-untyped-def]
        return zero_padded_nchw(x, b, co * cb + ci, i - top, j - left, c % cb != 0, bool(top or bottom),
                                bool(left or right))

    return [te.compute((n, blocked_channels(c, cb), h + top + bottom, w + left + right, cb), body,
                       name="to_nchwc", tag="injective")]


@register("FromNCHWc", Pattern.INJECTIVE, "elemwise")
def from_nchwc(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """[N, C/cb, H, W, cb] -> NCHW with ``channels`` channels (dropping the padded tail)."""
    x = ins[0]
    n, _, h, w, cb = shape_of(x)
    c = int(attrs.get("channels"))
    return [te.compute((n, c, h, w), lambda b, ch, i, j: x[b, ch // cb, i, j, ch % cb], name="from_nchwc",
                       tag="injective")]


# ------------------------------------------------------------------------------------- convolution
def pack_conv_weight(w: np.ndarray, block: int, blocked_input: bool, depthwise: bool) -> np.ndarray:
    """OIHW weights -> the layout ``NCHWcConv`` reads, zero-padding channels to whole blocks.

    dense, blocked input: ``[O/cb, I/cb, KH, KW, cb_in, cb_out]``; dense, NCHW input:
    ``[O/cb, I, KH, KW, cb_out]``; depthwise (I = 1 per group): ``[C/cb, KH, KW, cb]``.
    """
    o, i, kh, kw = w.shape
    ob = blocked_channels(o, block)
    wo = np.zeros((ob * block, i, kh, kw), w.dtype)
    wo[:o] = w
    if depthwise:
        return np.ascontiguousarray(wo.reshape(ob, block, kh, kw).transpose(0, 2, 3, 1))
    if not blocked_input:
        return np.ascontiguousarray(wo.reshape(ob, block, i, kh, kw).transpose(0, 2, 3, 4, 1))
    ib = blocked_channels(i, block)
    wi = np.zeros((ob * block, ib * block, kh, kw), w.dtype)
    wi[:, :i] = wo
    return np.ascontiguousarray(wi.reshape(ob, block, ib, block, kh, kw).transpose(0, 2, 4, 5, 3, 1))


def pack_channel_vector(v: np.ndarray, block: int, fill: float = 0.0) -> np.ndarray:
    """A per-channel vector [C] -> [C/cb, cb] (the tail filled with ``fill``)."""
    c = v.shape[0]
    out = np.full(blocked_channels(c, block) * block, fill, v.dtype)
    out[:c] = v
    return out.reshape(-1, block)


def _conv_geometry(attrs: Attrs, h: int, w: int, kh: int, kw: int) -> tuple[list[int], list[int], list[tuple[int, int]],
                                                                          int, int]:
    strides = [int(s) for s in attrs.get("strides", [1, 1])]
    dil = [int(d) for d in attrs.get("dilations", [1, 1])]
    p = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
    pads = [(p[0], p[2]), (p[1], p[3])]
    oh = (h + p[0] + p[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (w + p[1] + p[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    if oh <= 0 or ow <= 0:
        raise attrs.fail(f"kernel {kh}x{kw} larger than the padded input {h}x{w}")
    return strides, dil, pads, oh, ow


@register("NCHWcConv", Pattern.ANCHOR, "conv2d_nchwc")
def nchwc_conv(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Blocked 2-D convolution: inputs X (NCHWc, or NCHW for a dense first layer), packed W, bias [O/cb, cb].

    Attributes: ``strides``, ``dilations``, ``pads`` (ONNX order), ``depthwise`` (0/1).
    """
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    depthwise = bool(attrs.get("depthwise", 0))
    blocked_in = len(x.shape) == 5
    ws = shape_of(w)
    if depthwise:
        if not blocked_in:
            raise attrs.fail("a depthwise NCHWcConv needs a blocked input")
        n, cbn, h, wd, cb = shape_of(x)
        kh, kw = ws[1], ws[2]
    else:
        n, _, h, wd = shape_of(x)[:4]
        kh, kw, cb = ws[2], ws[3], ws[-1]
    (sh, sw), (dh, dw), pads, oh, ow = _conv_geometry(attrs, h, wd, kh, kw)
    xp = pad_spatial(x, pads)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    if depthwise:
        def body(b, co, i, j, ci):  # type: ignore[no-untyped-def]
            return te.sum(xp[b, co, i * sh + ry * dh, j * sw + rx * dw, ci] * w[co, ry, rx, ci], axis=[ry, rx])
        ob = cbn
    elif blocked_in:
        icb, cbi = shape_of(x)[1], shape_of(x)[4]
        rco = te.reduce_axis((0, icb), name="rco")
        rci = te.reduce_axis((0, cbi), name="rci")

        def body(b, co, i, j, ci):  # type: ignore[no-untyped-def]
            return te.sum(xp[b, rco, i * sh + ry * dh, j * sw + rx * dw, rci] * w[co, rco, ry, rx, rci, ci],
                          axis=[rco, ry, rx, rci])
        ob = ws[0]
    else:
        rc = te.reduce_axis((0, shape_of(x)[1]), name="rc")

        def body(b, co, i, j, ci):  # type: ignore[no-untyped-def]
            return te.sum(xp[b, rc, i * sh + ry * dh, j * sw + rx * dw] * w[co, rc, ry, rx, ci], axis=[rc, ry, rx])
        ob = ws[0]
    y = te.compute((n, ob, oh, ow, cb), body, name="conv", tag="anchor")
    if bias is None:
        return [y]
    return [te.compute(shape_of(y), lambda b, co, i, j, ci: y[b, co, i, j, ci] + bias[co, ci], name="bias_add",
                       tag="elemwise")]


# ------------------------------------------------------------------------------------------- pools
def _blocked_geometry(attrs: Attrs, x: te.Tensor):  # type: ignore[no-untyped-def]
    n, cbn, h, w, _ = shape_of(x)
    geo = pool_geometry(attrs, te.placeholder((n, cbn, h, w), x.dtype))
    if len(geo.kernel) != 2:
        raise attrs.fail("blocked pooling is 2-D only")
    return geo


def _window_pos(geo, i, j, win):  # type: ignore[no-untyped-def]
    return [i * geo.strides[0] + win[0] * geo.dilations[0], j * geo.strides[1] + win[1] * geo.dilations[1]]


@register("NCHWcMaxPool", Pattern.ANCHOR, "pool_nchwc")
def nchwc_max_pool(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX MaxPool (2-D, no Indices output) on a blocked input."""
    x = ins[0]
    geo = _blocked_geometry(attrs, x)
    fill = float("-inf") if is_float(x.dtype) else int(np.iinfo(str(x.dtype)).min)
    xp = pad_spatial(x, geo.padded_pads, fill)
    win = [te.reduce_axis((0, k), name=f"k{i}") for i, k in enumerate(geo.kernel)]
    n, cbn, _, _, cb = shape_of(x)

    def body(b, co, i, j, ci):  # type: ignore[no-untyped-def]
        p = _window_pos(geo, i, j, win)
        return te.max(xp[b, co, p[0], p[1], ci], axis=win)

    return [te.compute((n, cbn, *geo.out_sizes, cb), body, name="max_pool", tag="anchor")]


@register("NCHWcAveragePool", Pattern.ANCHOR, "pool_nchwc")
def nchwc_average_pool(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX AveragePool (2-D) on a blocked input, with the same tap counting as ``AveragePool``."""
    x = ins[0]
    geo = _blocked_geometry(attrs, x)
    include_pad = bool(attrs.get("count_include_pad", 0))
    xp = pad_spatial(x, geo.padded_pads, 0.0)
    win = [te.reduce_axis((0, k), name=f"k{i}") for i, k in enumerate(geo.kernel)]
    n, cbn, _, _, cb = shape_of(x)
    out_shape = (n, cbn, *geo.out_sizes, cb)

    def window_sum(b, co, i, j, ci):  # type: ignore[no-untyped-def]
        p = _window_pos(geo, i, j, win)
        return te.sum(xp[b, co, p[0], p[1], ci], axis=win)

    total = te.compute(out_shape, window_sum, name="avg_pool_sum", tag="anchor")
    divide = window_average(geo, include_pad, x.dtype)
    return [te.compute(out_shape, lambda b, co, i, j, ci: divide(total[b, co, i, j, ci], (i, j)), name="avg_pool",
                       tag="elemwise")]
