"""Winograd convolution F(m x m, r x r) on channel-blocked (NCHWc) tensors, chosen by the layout pass.

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

Stride 2 (polyphase): a 3x3 stride-2 convolution is a 2x2 stride-1 one over the input's four
(row parity, column parity) phases stacked as channels (``NCHWcPhaseSplit``), with the 3x3 kernel
spread over the phases (``pack_polyphase_winograd_weight``; 9 of its 16 taps are non-zero):
``y[i, j] = sum_{dy, dx, p} phase_p[i + dy, j + dx] * w[2 dy + py, 2 dx + px]``. F(4x4, 2x2) then
does 25 multiply-adds per 16 outputs and phase channel, 25 / 16 x 4 C = 6.25 C per output against
9 C direct: 0.69x the multiplications, worth it where the direct kernel already runs at the FMA
peak (Zen 4); the phase split replaces the NCHWc conversion an NCHW input needs anyway.

The same for a 7x7 stride-2 first layer (ResNet's stem): 4x4 taps per phase, F(4x4, 4x4) (a = 7),
and the phases of its few input channels packed densely (``dense``: 4 x 3 RGB channels in one
16-lane block), 49 multiply-adds per output and padded phase channel against 147 direct.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from tvm import te, tirx
from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

from .blocked import blocked_channels, pad_spatial, zero_padded_nchw
from .common import const, guarded_read
from .registry import Attrs, Pattern, register, shape_of

#: kernel sizes r of F(m x m, r x r): 3 (stride 1), 2 (a stride-2 3x3 kernel split by phase) and 4
#: (a stride-2 7x7 first layer split by phase)
KERNELS = (2, 3, 4)


def transform_matrices(m: int, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, G) of F(m x m, r x r): output ``a x m``, input ``a x a``, weight ``a x r`` (a = m + r - 1)."""
    a_mat, b_mat, g_mat = _cook_toom_convolution(_interpolation_points(m + r - 2), m, r)
    return a_mat.astype(np.float64), b_mat.astype(np.float64), g_mat.astype(np.float64)


def pack_winograd_weight(w: np.ndarray, block: int, m: int) -> np.ndarray:
    """OIHW r x r weights (r in ``KERNELS``) -> ``U = G g G^T`` as ``[a, a, O/cb, I/cb, cb_in,
    cb_out]``, zero-padded to whole channel blocks (computed in float64, stored in the weights' dtype)."""
    o, i, kh, kw = w.shape
    if kh != kw or kh not in KERNELS:
        raise ValueError(f"Winograd packing needs square weights of a size in {KERNELS}, got {kh}x{kw}")
    _, _, g_mat = transform_matrices(m, kh)
    a = m + kh - 1
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
    """r x r stride-1 convolution of a blocked input X with transformed weights U
    (``pack_winograd_weight``; r = a - m + 1 from their shape) and optional bias ``[O/cb, cb]``.
    Attributes: ``tile`` (m), ``pads``."""
    x, u = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    m = int(attrs.get("tile", 4))
    n, cbn, h, w, cb = shape_of(x)
    a, a2, kb, ub, cbi, cbo = shape_of(u)
    r = a - m + 1
    if a != a2 or r not in KERNELS or ub != cbn or (cbi, cbo) != (cb, cb):
        raise attrs.fail(f"transformed weights {shape_of(u)} do not fit tile {m} and input {shape_of(x)}")
    p = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
    oh, ow = h + p[0] + p[2] - r + 1, w + p[1] + p[3] - r + 1
    if oh <= 0 or ow <= 0:
        raise attrs.fail(f"{r}x{r} kernel larger than the padded input {h}x{w}")
    th, tw = -(-oh // m), -(-ow // m)
    tiles = n * th * tw
    xp = pad_spatial(x, [(p[0], th * m + r - 1 - h - p[0]), (p[1], tw * m + r - 1 - w - p[1])])
    a_mat, b_mat, _ = transform_matrices(m, r)
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


# ------------------------------------------------------------------------------ stride 2 by phases
def pack_polyphase_winograd_weight(w: np.ndarray, block: int, m: int, dense: bool = False) -> np.ndarray:
    """OIHW k x k stride-2 weights (k odd: 3, 7) -> the transformed r x r weights (r = (k + 1) / 2)
    of F(m x m, r x r) over the four input phases (``NCHWcPhaseSplit``), tap ``(dy, dx)`` of phase
    ``(py, px)`` being ``w[2 dy + py, 2 dx + px]`` (zero outside the kernel). Phase ``p = 2 py + px``
    owns input channels ``p * C .. p * C + C - 1``: C = I rounded up to whole blocks, or with
    ``dense`` C = I (a few-channel input: the four phases share blocks)."""
    o, i, kh, kw = w.shape
    if kh != kw or kh % 2 == 0 or (kh + 1) // 2 not in KERNELS:
        raise ValueError(f"polyphase Winograd packing needs odd square weights of a size in "
                         f"{[2 * r - 1 for r in KERNELS]}, got {kh}x{kw}")
    r = (kh + 1) // 2
    c = i if dense else blocked_channels(i, block) * block
    wr = np.zeros((o, i, 2 * r, 2 * r), w.dtype)  # the kernel zero-padded to r taps x 2 phases per axis
    wr[:, :, :kh, :kw] = w
    by_phase = wr.reshape(o, i, r, 2, r, 2).transpose(0, 3, 5, 1, 2, 4)  # [o, py, px, i, dy, dx]
    spread = np.zeros((o, 4, c, r, r), w.dtype)
    spread[:, :, :i] = by_phase.reshape(o, 4, i, r, r)
    return pack_winograd_weight(spread.reshape(o, 4 * c, r, r), block, m)


@register("NCHWcPhaseSplit", Pattern.INJECTIVE, "elemwise")
def nchwc_phase_split(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """The zero-padded input of a stride-2 convolution, NCHW or blocked ``[N, C/cb, H, W, cb]``, as
    its four (row parity, column parity) phases stacked phase-major on the channel-block axis:
    ``out[n, p * CB + k, i, j, l] = xpad[n, channel k * cb + l, 2 i + p // 2, 2 j + p % 2]``, each
    phase ``size`` = (rows, columns) large. Attributes: ``block`` (cb), ``pads`` (top, left),
    ``size``, ``dense`` (NCHW input only: phase-major over channels instead of blocks, channel ``q =
    p * C + c`` of ``4 C`` rounded up to a block; a 3-channel image makes 12 of one 16-lane block
    instead of 4 mostly empty blocks). From an NCHW input this is also the NCHWc conversion."""
    x = ins[0]
    shape = shape_of(x)
    cb = int(attrs.get("block"))
    top, left = (int(v) for v in attrs.get("pads", [0, 0]))
    rows, cols = (int(v) for v in attrs.get("size"))
    plain = len(shape) == 4
    n, c, h, w = shape if plain else (shape[0], shape[1] * shape[4], shape[2], shape[3])
    if not plain and shape[4] != cb:
        raise attrs.fail(f"blocked input {shape} does not have blocks of {cb} channels")
    dense = bool(attrs.get("dense", 0))
    if dense and not plain:
        raise attrs.fail("dense phase packing needs an NCHW input")
    blocks = blocked_channels(c, cb)
    out_blocks = blocked_channels(4 * c, cb) if dense else 4 * blocks

    def body(b, q, i, j, ci):  # type: ignore[no-untyped-def]
        if dense:
            phase, channel = (q * cb + ci) // c, (q * cb + ci) % c
        else:
            phase, k = q // blocks, q % blocks
            channel = k * cb + ci
        row, col = 2 * i + phase // 2 - top, 2 * j + phase % 2 - left
        if plain and not dense:
            return zero_padded_nchw(x, b, channel, row, col, c % cb != 0, True, True)
        # the channel is in range here (dense: lanes past the 4 C phase channels are phase 4 and up)
        inside = [phase < 4] if dense else []
        inside += [row >= 0, row < h, col >= 0, col < w]
        row, col = tirx.max(tirx.min(row, h - 1), 0), tirx.max(tirx.min(col, w - 1), 0)
        value = x[b, channel, row, col] if dense else x[b, k, row, col, ci]
        return guarded_read(tirx.all(*inside), value, const(0, x.dtype))  # clamped: see zero_padded_nchw

    return [te.compute((n, out_blocks, rows, cols, cb), body, name="phase_split", tag="injective")]
