"""Pooling and local response normalisation: MaxPool, AveragePool, Global*Pool, LRN.

Pools work on N, C, spatial... tensors with any number of spatial axes (1-D, 2-D, 3-D). The
input is first padded by its own injective stage (``pad``: -inf for max, zeros for average),
covering the explicit/automatic pads plus the extra tail ``ceil_mode`` may need; the window
reduction (tag ``anchor``) then reads the padded tensor without bounds checks. Average pooling
divides by the number of window taps that fall inside the input (``count_include_pad=0``) or
inside the explicitly padded input (``count_include_pad=1``); taps in the ceil-mode tail never
count. Windows that would start in the right padding are dropped, as ONNX specifies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import tvm
from tvm import te, tirx

from .common import const
from .conv import conv_pads, pad_nchw
from .reduce import elemwise_stage, is_float, reduce_axes_compute
from .registry import Attrs, Pattern, register, shape_of

Expr = tvm.ir.expr.Expr


@dataclass
class PoolGeometry:
    """Window parameters of one pooling node, per spatial axis."""

    in_sizes: list[int]
    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    pads: list[tuple[int, int]]  # explicit or automatic (begin, end) padding
    out_sizes: list[int]

    @property
    def padded_pads(self) -> list[tuple[int, int]]:
        """Padding actually applied: ``pads`` plus the tail the last (ceil-mode) window reads."""
        out = []
        for size, k, s, d, (b, e), o in zip(self.in_sizes, self.kernel, self.strides, self.dilations,
                                            self.pads, self.out_sizes):
            need = (o - 1) * s + (k - 1) * d + 1
            out.append((b, max(e, need - size - b)))
        return out


def pool_geometry(attrs: Attrs, x: te.Tensor) -> PoolGeometry:
    """Kernel, strides, dilations, pads and output sizes of a pooling node on input ``x``."""
    shape = shape_of(x)
    nd = len(shape) - 2
    if nd < 1:
        raise attrs.fail(f"input must be N x C x spatial..., got shape {shape}")
    kernel = [int(k) for k in attrs.get("kernel_shape", [])]
    if len(kernel) != nd:
        raise attrs.fail(f"kernel_shape {kernel} must have one entry per spatial axis of input {shape}")
    strides = [int(s) for s in attrs.get("strides", [1] * nd)]
    dil = [int(d) for d in attrs.get("dilations", [1] * nd)]
    if len(strides) != nd or len(dil) != nd or len(attrs.get("pads", [0] * 2 * nd)) != 2 * nd:
        raise attrs.fail(f"strides {strides}, dilations {dil} or pads do not match {nd} spatial axes")
    in_sizes = list(shape[2:])
    pads = conv_pads(attrs, in_sizes, kernel, strides, dil)
    ceil = bool(attrs.get("ceil_mode", 0))
    out_sizes = []
    for size, k, s, d, (b, e) in zip(in_sizes, kernel, strides, dil, pads):
        span = size + b + e - ((k - 1) * d + 1)
        if span < 0:
            raise attrs.fail(f"window {k} (dilation {d}) is larger than the padded input {size + b + e}")
        o = (math.ceil(span / s) if ceil else span // s) + 1
        if ceil and (o - 1) * s >= size + b:
            o -= 1  # the last window would start in the right padding
        out_sizes.append(o)
    return PoolGeometry(in_sizes, kernel, strides, dil, pads, out_sizes)


def _window(geo: PoolGeometry) -> list[te.IterVar]:
    return [te.reduce_axis((0, k), name=f"k{i}") for i, k in enumerate(geo.kernel)]


def _padded_pos(geo: PoolGeometry, out_idx: Sequence[Expr], win: Sequence) -> list[Expr]:
    """Positions in the padded input read by window tap ``win`` of output ``out_idx``."""
    return [o * s + w * d for o, w, s, d in zip(out_idx, win, geo.strides, geo.dilations)]


def _max_pool(x: te.Tensor, geo: PoolGeometry) -> tuple[te.Tensor, te.Tensor]:
    fill = float("-inf") if is_float(x.dtype) else int(np.iinfo(str(x.dtype)).min)
    xp = pad_nchw(x, geo.padded_pads, fill, name="pad")
    win = _window(geo)
    out_shape = tuple(shape_of(x)[:2]) + tuple(geo.out_sizes)

    def body(n: Expr, c: Expr, *o: Expr) -> Expr:
        return te.max(xp[(n, c, *_padded_pos(geo, o, win))], axis=win)

    y = te.compute(out_shape, body, name="max_pool", tag="anchor")
    return xp, y


def _max_pool_indices(x: te.Tensor, xp: te.Tensor, y: te.Tensor, geo: PoolGeometry,
                      storage_order: int) -> te.Tensor:
    """Flat int64 index into ``x`` of the first maximum of each window (the Indices output)."""
    shape = shape_of(x)
    spatial = geo.in_sizes
    row_strides = [int(np.prod(spatial[i + 1:])) for i in range(len(spatial))]
    col_strides = [int(np.prod(spatial[:i])) for i in range(len(spatial))]
    none = int(np.prod(spatial))
    win = _window(geo)

    def search(n: Expr, c: Expr, *o: Expr) -> Expr:
        pos = _padded_pos(geo, o, win)
        key, inside = const(0, "int64"), []
        for p, (b, _), size, st in zip(pos, geo.pads, spatial, row_strides):
            key = key + (p - b).astype("int64") * const(st, "int64")
            inside += [p >= b, p < b + size]
        hit = tirx.all(*inside, xp[(n, c, *pos)] == y[(n, c, *o)])
        return te.min(tirx.Select(hit, key, const(none, "int64")), axis=win)

    first = te.compute(shape_of(y), search, name="max_pool_argmax", tag="reduce")

    def body(n: Expr, c: Expr, *o: Expr) -> Expr:
        key = first[(n, c, *o)]
        base = (n.astype("int64") * shape[1] + c.astype("int64")) * const(none, "int64")
        if storage_order == 0 or len(spatial) == 1:
            return base + key
        out = base
        for st, cs, size in zip(row_strides, col_strides, spatial):
            out = out + tirx.floormod(tirx.floordiv(key, const(st, "int64")), const(size, "int64")) * cs
        return out

    return elemwise_stage(shape_of(y), body, "max_pool_indices")


@register("MaxPool", Pattern.ANCHOR, "pool")
def max_pool(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX MaxPool (any number of spatial axes), with its optional Indices output."""
    x = ins[0]
    geo = pool_geometry(attrs, x)
    xp, y = _max_pool(x, geo)
    if attrs.opset < 8:
        return [y]
    return [y, _max_pool_indices(x, xp, y, geo, int(attrs.get("storage_order", 0)))]


def _tap_count(o: Expr, k: int, s: int, d: int, begin: int, lo: int, hi: int) -> Expr:
    """Number of window taps of output ``o`` on one axis whose input position lies in [lo, hi)."""
    start = o * s - begin
    kmin = tirx.max(tirx.floordiv(lo - start + d - 1, d), 0)
    kmax = tirx.min(tirx.floordiv(hi - 1 - start, d), k - 1)
    return tirx.max(kmax - kmin + 1, 1)


def _count_bounds(geo: PoolGeometry, include_pad: bool) -> list[tuple[int, int]]:
    if include_pad:
        return [(-b, size + e) for size, (b, e) in zip(geo.in_sizes, geo.pads)]
    return [(0, size) for size in geo.in_sizes]


def _uniform_count(geo: PoolGeometry, include_pad: bool) -> int | None:
    """The divisor if every window has the same number of counted taps, else None."""
    total = 1
    for (lo, hi), k, s, d, (b, _), n_out in zip(_count_bounds(geo, include_pad), geo.kernel, geo.strides,
                                                geo.dilations, geo.pads, geo.out_sizes):
        counts = {sum(1 for t in range(k) if lo <= o * s - b + t * d < hi) for o in range(n_out)}
        if len(counts) != 1:
            return None
        total *= counts.pop()
    return total


@register("AveragePool", Pattern.ANCHOR, "pool")
def average_pool(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX AveragePool (any number of spatial axes)."""
    x = ins[0]
    if not is_float(x.dtype):
        raise attrs.fail(f"input must be a floating-point tensor, got {x.dtype}")
    geo = pool_geometry(attrs, x)
    include_pad = bool(attrs.get("count_include_pad", 0))
    xp = pad_nchw(x, geo.padded_pads, 0.0, name="pad")
    win = _window(geo)
    out_shape = tuple(shape_of(x)[:2]) + tuple(geo.out_sizes)

    def window_sum(n: Expr, c: Expr, *o: Expr) -> Expr:
        return te.sum(xp[(n, c, *_padded_pos(geo, o, win))], axis=win)

    total = te.compute(out_shape, window_sum, name="avg_pool_sum", tag="anchor")
    divide = window_average(geo, include_pad, x.dtype)
    return [elemwise_stage(out_shape, lambda n, c, *o: divide(total[(n, c, *o)], o), "avg_pool")]


def window_average(geo: PoolGeometry, include_pad: bool, dtype: str) -> Callable[[Expr, Sequence[Expr]], Expr]:
    """``divide(window_sum, spatial_position)``: a pooling window's sum over its number of counted
    taps (a constant when every window has the same count, else per output position)."""
    uniform = _uniform_count(geo, include_pad)
    bounds = _count_bounds(geo, include_pad)

    def divide(total: Expr, spatial: Sequence[Expr]) -> Expr:
        if uniform is not None:
            return total * const(1.0 / uniform, dtype)
        count = None
        for oi, (lo, hi), k, s, d, (b, _) in zip(spatial, bounds, geo.kernel, geo.strides, geo.dilations, geo.pads):
            term = _tap_count(oi, k, s, d, b, lo, hi)
            count = term if count is None else count * term
        return total / count.astype(dtype)

    return divide


def _global(x: te.Tensor, attrs: Attrs, kind: str) -> te.Tensor:
    shape = shape_of(x)
    if len(shape) < 3:
        raise attrs.fail(f"input must be N x C x spatial..., got shape {shape}")
    axes = list(range(2, len(shape)))
    if kind == "max":
        return reduce_axes_compute(x, axes, True, te.max, lambda i: x[tuple(i)], "global_max_pool")
    total = reduce_axes_compute(x, axes, True, te.sum, lambda i: x[tuple(i)], "global_avg_pool_sum")
    n = int(np.prod(shape[2:]))
    return elemwise_stage(shape_of(total), lambda *i: total[i] * const(1.0 / n, x.dtype), "global_avg_pool")


@register("GlobalMaxPool", Pattern.ANCHOR, "pool")
def global_max_pool(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX GlobalMaxPool: max over all spatial axes, kept as size-1 axes."""
    return [_global(ins[0], attrs, "max")]


@register("GlobalAveragePool", Pattern.ANCHOR, "pool")
def global_average_pool(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX GlobalAveragePool: mean over all spatial axes, kept as size-1 axes."""
    x = ins[0]
    if not is_float(x.dtype):
        raise attrs.fail(f"input must be a floating-point tensor, got {x.dtype}")
    return [_global(x, attrs, "avg")]


@register("LRN", Pattern.ANCHOR, "pool")
def lrn(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX LRN: ``x / (bias + alpha / size * sum of x^2 over the channel window) ** beta``.

    The window of channel c is [c - floor((size-1)/2), c + ceil((size-1)/2)], clipped to the
    tensor; the squares are zero-padded along C by their own stage (``lrn_sq_pad``).
    """
    x = ins[0]
    shape = shape_of(x)
    if len(shape) < 3 or not is_float(x.dtype):
        raise attrs.fail(f"input must be a float N x C x spatial... tensor, got {x.dtype} {shape}")
    size = attrs.get("size")
    if size is None or int(size) < 1:
        raise attrs.fail(f"attribute 'size' must be a positive integer, got {size}")
    size = int(size)
    alpha, beta, bias = (float(attrs.get(k, v)) for k, v in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    chans = shape[1]

    def square_padded(n: Expr, c: Expr, *rest: Expr) -> Expr:
        v = x[(n, c - before, *rest)]
        return tirx.if_then_else(tirx.all(c >= before, c < before + chans), v * v, const(0, x.dtype))

    sq = te.compute((shape[0], chans + before + after, *shape[2:]), square_padded, name="lrn_sq_pad",
                    tag="injective")
    r = te.reduce_axis((0, size), name="rc")
    ssum = te.compute(shape, lambda n, c, *rest: te.sum(sq[(n, c + r, *rest)], axis=r), name="lrn_sum",
                      tag="anchor")

    def body(*i: Expr) -> Expr:
        scale = const(bias, x.dtype) + const(alpha / size, x.dtype) * ssum[i]
        return x[i] / te.power(scale, const(beta, x.dtype))

    return [elemwise_stage(shape, body, "lrn")]
