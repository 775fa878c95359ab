"""Winograd convolution F(m x m, 3 x 3) on channel-blocked (NCHWc) tensors, chosen by the layout pass.

Same operator as a 3x3, stride-1 ``NCHWcConv``, computed with fewer multiplications (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2015): the output is cut into ``m x m`` tiles;
each tile's ``a x a`` input patch (``a = m + 2``) is transformed (``V = B^T d B``), multiplied
element by element with the transformed weights (``U = G g G^T``, done once at compile time) and
summed over input channels, which makes ``a * a`` independent matrix products (tiles x channels x
channels), and transformed back (``Y = A^T M A``). With m = 4 that is 36 multiply-adds per 16
outputs and channel pair instead of 144: 4x fewer. The transforms cost a few adds per element.

Stages, each a tensor expression (the schedule in ``schedules/x86/winograd.py`` decides how):
- ``pad``: the input with the convolution's padding, extended to whole tiles;
- ``wino_rows``, ``wino_in``: the input transform, separably (rows, then columns), so each stage
  is a few adds with constant coefficients per element (zeros skipped here, at build time);
- ``wino_gemm`` (the anchor): ``M[e, u, k, p] = sum_c V[e, u, c, p] * U[e, u, c, k]``;
- ``wino_out_rows``, ``wino_out``: the inverse transform, again separably; plus the bias.

The transform matrices come from ``tvm.topi``'s Cook-Toom construction. fp32 error grows with m:
measured max abs error 1e-5 (m = 4) against PyTorch on unit-scale data, 3e-6 for m = 2.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from tvm import te, tirx
from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

from .blocked import blocked_channels, pad_spatial
from .common import const
from .registry import Attrs, Pattern, register, shape_of

KERNEL = 3


def transform_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, G) of F(m x m, 3 x 3): output ``a x m``, input ``a x a``, weight ``a x 3`` (a = m + 2)."""
    a_mat, b_mat, g_mat = _cook_toom_convolution(_interpolation_points(m + KERNEL - 2), m, KERNEL)
    return a_mat.astype(np.float64), b_mat.astype(np.float64), g_mat.astype(np.float64)


def pack_winograd_weight(w: np.ndarray, block: int, m: int) -> np.ndarray:
    """OIHW 3x3 weights -> ``U = G g G^T`` as ``[a, a, O/cb, I/cb, cb_in, cb_out]``, zero-padded
    to whole channel blocks (computed in float64, stored in the weights' dtype)."""
    o, i, kh, kw = w.shape
    if (kh, kw) != (KERNEL, KERNEL):
        raise ValueError(f"Winograd packing needs 3x3 weights, got {kh}x{kw}")
    _, _, g_mat = transform_matrices(m)
    a = m + KERNEL - 1
    ob, ib = blocked_channels(o, block), blocked_channels(i, block)
    wp = np.zeros((ob * block, ib * block, kh, kw), np.float64)
    wp[:o, :i] = w
    u = np.einsum("ar,kcrs,bs->abkc", g_mat, wp, g_mat, optimize=True)  # [a, a, O, I]
    u = u.reshape(a, a, ob, block, ib, block).transpose(0, 1, 2, 4, 5, 3)
    return np.ascontiguousarray(u.astype(w.dtype))


def _pick(var: Any, exprs: list[Any]) -> Any:
    """``exprs[var]`` for a loop variable: a select chain that folds away once ``var`` is unrolled."""
    out = exprs[-1]
    for i in range(len(exprs) - 2, -1, -1):
        out = tirx.Select(var == i, exprs[i], out)
    return out


def _combine(coefs: np.ndarray, term: Callable[[int], Any], dtype: str) -> Any:
    """``sum_i coefs[i] * term(i)`` with the zero coefficients dropped and the unit ones unscaled."""
    total = None
    for i, c in enumerate(coefs):
        if c == 0:
            continue
        t = term(i) if c == 1 else (-term(i) if c == -1 else term(i) * const(float(c), dtype))
        total = t if total is None else total + t
    return total if total is not None else const(0.0, dtype)


@register("NCHWcWinogradConv", Pattern.ANCHOR, "conv2d_winograd_nchwc")
def nchwc_winograd_conv(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """3x3 stride-1 convolution of a blocked input X with transformed weights U
    (``pack_winograd_weight``) and optional bias ``[O/cb, cb]``. Attributes: ``tile`` (m), ``pads``."""
    x, u = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    m = int(attrs.get("tile", 4))
    n, cbn, h, w, cb = shape_of(x)
    a, a2, kb, ub, cbi, cbo = shape_of(u)
    if (a, a2) != (m + 2, m + 2) or ub != cbn or (cbi, cbo) != (cb, cb):
        raise attrs.fail(f"transformed weights {shape_of(u)} do not fit tile {m} and input {shape_of(x)}")
    p = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
    oh, ow = h + p[0] + p[2] - 2, w + p[1] + p[3] - 2
    if oh <= 0 or ow <= 0:
        raise attrs.fail(f"3x3 kernel larger than the padded input {h}x{w}")
    th, tw = -(-oh // m), -(-ow // m)
    tiles = n * th * tw
    xp = pad_spatial(x, [(p[0], th * m + 2 - h - p[0]), (p[1], tw * m + 2 - w - p[1])])
    a_mat, b_mat, _ = transform_matrices(m)
    dt = x.dtype

    def patch(t: Any, r1: Any, r2: Any, c: Any, ci: Any) -> Any:
        return xp[t // (th * tw), c, (t // tw) % th * m + r1, t % tw * m + r2, ci]

    rows = te.compute((cbn, tiles, a, a, cb), lambda c, t, e, r2, ci: _pick(
        e, [_combine(b_mat[:, i], lambda r1: patch(t, r1, r2, c, ci), dt) for i in range(a)]), name="wino_rows")
    v = te.compute((a, a, cbn, tiles, cb), lambda e, f, c, t, ci: _pick(
        f, [_combine(b_mat[:, i], lambda r2: rows[c, t, e, r2, ci], dt) for i in range(a)]), name="wino_in")
    rc = te.reduce_axis((0, cbn), name="rc")
    rci = te.reduce_axis((0, cb), name="rci")
    gemm = te.compute((a, a, kb, tiles, cb), lambda e, f, k, t, ko: te.sum(
        v[e, f, rc, t, rci] * u[e, f, k, rc, rci, ko], axis=[rc, rci]), name="wino_gemm", tag="anchor")
    out_rows = te.compute((kb, tiles, m, a, cb), lambda k, t, i, f, ko: _pick(
        i, [_combine(a_mat[:, j], lambda e: gemm[e, f, k, t, ko], dt) for j in range(m)]), name="wino_out_rows")

    def output(b: Any, k: Any, i: Any, j: Any, ko: Any) -> Any:
        t = (b * th + i // m) * tw + j // m
        y = _pick(j % m, [_combine(a_mat[:, jj], lambda f: out_rows[k, t, i % m, f, ko], dt) for jj in range(m)])
        return y + bias[k, ko] if bias is not None else y

    return [te.compute((n, kb, oh, ow, cb), output, name="wino_out", tag="elemwise")]
