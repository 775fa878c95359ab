"""Adjoints of the data-movement operators (forward algorithms in movement.py).

Layout changes map the gradient back with the inverse layout change; slicing-like operators
scatter it into zeros (SliceGrad, GatherGrad); Concat/Split are each other's adjoint.
"""

from __future__ import annotations

import numpy as np
from tvm import te

from ..autodiff.registry import adjoint
from .registry import Attrs


@adjoint(["Reshape", "Flatten", "Squeeze", "Unsqueeze"], nondiff=(1,))
def _reshape_adj(b, node, g):  # type: ignore[no-untyped-def]
    return [b.reshape(g[0], b.shape(node.inputs[0])), None]


@adjoint("Identity")
def _identity_adj(b, node, g):  # type: ignore[no-untyped-def]
    return [g[0]]


@adjoint("Transpose")
def _transpose_adj(b, node, g):  # type: ignore[no-untyped-def]
    rank = len(b.shape(node.inputs[0]))
    perm = list(node.attrs.get("perm", list(range(rank))[::-1]))
    return [b.transpose(g[0], list(np.argsort(perm)))]


@adjoint(["Expand", "Tile"], nondiff=(1,))
def _expand_adj(b, node, g):  # type: ignore[no-untyped-def]
    x = node.inputs[0]
    if node.op == "Expand":
        return [b.unbroadcast(g[0], x), None]
    s = b.shape(x)
    reps = [int(r) for r in b.graph.constants[node.inputs[1]].reshape(-1)]
    split = tuple(v for r, d in zip(reps, s) for v in (r, d))  # (rep0, d0, rep1, d1, ...)
    summed = b.sum_to(b.reshape(g[0], split), tuple(v for d in s for v in (1, d)))
    return [b.reshape(summed, s), None]


def _axis(node, rank: int) -> int:  # type: ignore[no-untyped-def]
    a = int(node.attrs.get("axis", 0))
    return a + rank if a < 0 else a


@adjoint("Concat")
def _concat_adj(b, node, g):  # type: ignore[no-untyped-def]
    rank = len(b.shape(g[0]))
    axis, start, out = _axis(node, rank), 0, []
    for name in node.inputs:
        n = b.shape(name)[axis]
        c = [b.const(np.array([v], dtype=np.int64), hint="sl") for v in (start, start + n, axis)]
        out.append(b.op("Slice", g[0], *c))
        start += n
    return out


@adjoint("Split", nondiff=(1,))
def _split_adj(b, node, g):  # type: ignore[no-untyped-def]
    x = node.inputs[0]
    axis = _axis(node, len(b.shape(x)))
    parts = []
    for info, gi in zip(b.output_infos(node), g):
        parts.append(gi if gi is not None else b.const(np.zeros(info.shape, info.dtype), hint="zero"))
    return [b.op("Concat", *parts, axis=axis) if len(parts) > 1 else parts[0], None]


@adjoint("Slice", nondiff=(1, 2, 3, 4))
def _slice_adj(b, node, g):  # type: ignore[no-untyped-def]
    from .movement import _slice_params

    x = node.inputs[0]
    s = b.shape(x)
    ins = [None] + [b.graph.constants[i] if i else None for i in node.inputs[1:]]
    starts, ends, axes, steps = _slice_params(ins, Attrs(node.attrs, node.opset, node.describe()), len(s))
    begin, step = [0] * len(s), [1] * len(s)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        begin[ax], _, step[ax] = slice(st, en, sp).indices(s[ax])
    return [b.op("SliceGrad", g[0], input_shape=list(s), begin=begin, step=step)]


@adjoint("Pad", nondiff=(1, 2, 3))
def _pad_adj(b, node, g):  # type: ignore[no-untyped-def]
    from .movement import _pad_params

    if node.attrs.get("mode", "constant") != "constant":
        raise ValueError(f"{node.describe()}: gradients are implemented for constant padding only")
    x = node.inputs[0]
    s = b.shape(x)
    ins = [te.placeholder(s, b.dtype(x))] + [b.graph.constants[i] if i else None for i in node.inputs[1:]]
    lo, _ = _pad_params(ins, Attrs(node.attrs, node.opset, node.describe()), len(s))
    c = [b.const(np.array(v, dtype=np.int64), hint="sl") for v in (lo, [p + d for p, d in zip(lo, s)])]
    return [b.op("Slice", g[0], *c)]


@adjoint("Gather", nondiff=(1,))
def _gather_adj(b, node, g):  # type: ignore[no-untyped-def]
    x, idx = node.inputs[:2]
    axis = _axis(node, len(b.shape(x)))
    return [b.op("GatherGrad", idx, g[0], axis=axis, input_shape=list(b.shape(x))), None]


# ---------------------------------------------------------------------- block rearrangements, GatherElements


@adjoint("DepthToSpace")
def _depth_to_space_adj(b, node, g):  # type: ignore[no-untyped-def]
    """DepthToSpace is a permutation; SpaceToDepth with the same blocksize and mode inverts it."""
    return [b.op("SpaceToDepth", g[0], blocksize=int(node.attrs.get("blocksize", 0)),
                 mode=node.attrs.get("mode", "DCR"))]


@adjoint("SpaceToDepth")
def _space_to_depth_adj(b, node, g):  # type: ignore[no-untyped-def]
    """SpaceToDepth is a permutation; DepthToSpace with the same blocksize and mode inverts it."""
    return [b.op("DepthToSpace", g[0], blocksize=int(node.attrs.get("blocksize", 0)),
                 mode=node.attrs.get("mode", "DCR"))]


@adjoint("GatherElements", nondiff=(1,))
def _gather_elements_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Scatter-add of g along ``axis`` at the indices (negative ones counted from the end).

    Composed from registered operators: a one-hot mask ``indices == arange(D)`` on a new axis after
    ``axis`` selects g, a sum over ``axis`` folds the gathered positions onto each source index,
    and SliceGrad zero-fills the data positions the (smaller) indices tensor does not cover.
    """
    x, idx = node.inputs[:2]
    s, si = b.shape(x), b.shape(idx)
    axis = _axis(node, len(s))
    dim = s[axis]
    spread = si[:axis + 1] + (1,) + si[axis + 1:]
    u = b.reshape(idx, spread)
    ar = np.arange(dim, dtype=b.dtype(idx)).reshape((1,) * (axis + 1) + (dim,) + (1,) * (len(s) - axis - 1))
    mask = b.op("Or", b.op("Equal", u, b.const(ar, hint="arange")), b.op("Equal", u, b.const(ar - dim, hint="arange")))
    picked = b.op("Where", mask, b.reshape(g[0], spread), b.scalar(0.0, g[0]))
    summed = b.reshape(b.sum_to(picked, si[:axis] + (1, dim) + si[axis + 1:]), si[:axis] + (dim,) + si[axis + 1:])
    if b.shape(summed) != s:
        summed = b.op("SliceGrad", summed, input_shape=list(s), begin=[0] * len(s), step=[1] * len(s))
    return [summed, None]


# ---------------------------------------------------------------------- Resize / Upsample


def _resize_setup(b, node):  # type: ignore[no-untyped-def]
    """(mode, coord mode, nearest mode, output shape, per-axis scales) exactly as the forward derives them."""
    from .movement import _nonempty, _resize_geometry

    attrs = Attrs(node.attrs, node.opset, node.describe())
    x = node.inputs[0]

    def const(i: int):  # type: ignore[no-untyped-def]
        name = node.inputs[i] if len(node.inputs) > i else ""
        return _nonempty(b.graph.constants[name]) if name else None

    if node.op == "Upsample":
        scales = np.asarray(node.attrs.get("scales"), np.float32) if node.opset < 9 else const(1)
        sizes, coord, nearest = None, "asymmetric", "simple"
    elif node.opset < 11:
        scales, sizes, coord, nearest = const(1), None, "asymmetric", "simple"
    else:
        scales, sizes = const(2), const(3)
        coord = node.attrs.get("coordinate_transformation_mode", "half_pixel")
        nearest = node.attrs.get("nearest_mode", "round_prefer_floor")
    out, factors = _resize_geometry(te.placeholder(b.shape(x), b.dtype(x)), attrs, scales, sizes)
    return node.attrs.get("mode", "nearest"), coord, nearest, out, factors


def _source_coords(n_out: int, mode: str, scale: float, n_in: int) -> np.ndarray:
    """Input coordinate of every output index along one axis (numpy twin of movement._source_coord)."""
    y = np.arange(n_out, dtype=np.float64)
    width = scale * n_in
    if mode == "asymmetric":
        return y / scale
    if mode == "align_corners":
        return np.zeros_like(y) if width == 1 else y * float(n_in - 1) / (width - 1)
    if mode == "pytorch_half_pixel" and width == 1:
        return np.full_like(y, -0.5)
    c = (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        c = c + n_in / 2 * (1 - n_out / width)
    return c


def _nearest_index(c: np.ndarray, mode: str, scale: float, n_in: int) -> np.ndarray:
    """Nearest input index per coordinate (numpy twin of movement._nearest)."""
    if mode == "simple":
        mode = "ceil" if scale < 1 else "floor"
    r = {"round_prefer_floor": lambda: np.ceil(c - 0.5), "round_prefer_ceil": lambda: np.floor(c + 0.5),
         "floor": lambda: np.floor(c), "ceil": lambda: np.ceil(c)}[mode]()
    return np.clip(r.astype(np.int64), 0, n_in - 1)


def resize_matrix(mode: str, coord: str, nearest: str, scale: float, n_in: int, n_out: int) -> np.ndarray:
    """The (n_in, n_out) matrix M of one resized axis: forward is ``y = x @ M`` along that axis."""
    c = _source_coords(n_out, coord, scale, n_in)
    m = np.zeros((n_in, n_out), dtype=np.float64)
    cols = np.arange(n_out)
    if mode == "nearest":
        m[_nearest_index(c, nearest, scale, n_in), cols] = 1.0
        return m
    lo = np.floor(c)
    frac = c - lo
    lo = lo.astype(np.int64)
    np.add.at(m, (np.clip(lo, 0, n_in - 1), cols), 1.0 - frac)
    np.add.at(m, (np.clip(lo + 1, 0, n_in - 1), cols), frac)
    return m


def _block_factor(m: np.ndarray) -> int:
    """k when M sends output i to input i // k exactly (integer nearest upsampling), else 0."""
    n_in, n_out = m.shape
    if n_out % n_in:
        return 0
    k = n_out // n_in
    expected = np.zeros_like(m)
    expected[np.arange(n_out) // k, np.arange(n_out)] = 1.0
    return k if np.array_equal(m, expected) else 0


def _resize_axis_transpose(b, gy: str, axis: int, m: np.ndarray) -> str:  # type: ignore[no-untyped-def]
    """``gy`` contracted with M along ``axis`` (the transpose of one axis' interpolation)."""
    s = b.shape(gy)
    rank, n_in = len(s), m.shape[0]
    k = _block_factor(m)
    if k:  # each input index receives a block of k consecutive outputs: reshape and sum
        split = s[:axis] + (n_in, k) + s[axis + 1:]
        summed = b.sum_to(b.reshape(gy, split), s[:axis] + (n_in, 1) + s[axis + 1:])
        return b.reshape(summed, s[:axis] + (n_in,) + s[axis + 1:])
    mat = b.const(m.astype(b.dtype(gy)), hint="resize_t")
    if axis == rank - 2:
        return b.op("MatMul", mat, gy)
    mat_t = b.const(np.ascontiguousarray(m.T).astype(b.dtype(gy)), hint="resize_t")
    if axis == rank - 1:
        return b.op("MatMul", gy, mat_t)
    perm = [d for d in range(rank) if d != axis] + [axis]
    moved = b.op("MatMul", b.transpose(gy, perm), mat_t)
    return b.transpose(moved, list(np.argsort(perm)))


@adjoint("Resize", nondiff=(1, 2, 3))
def _resize_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Nearest and (multi-)linear resizes are separable linear maps: per resized axis, the gradient
    is multiplied by the transpose of that axis' interpolation matrix (for nearest, a scatter-add
    of each output pixel's gradient to its source pixel; a reshape-and-sum for integer upsampling).
    Cubic resizes cannot be compiled, so they never reach here."""
    x = node.inputs[0]
    mode, coord, nearest, out, factors = _resize_setup(b, node)
    if mode not in ("nearest", "linear"):
        raise ValueError(f"{node.describe()}: gradients of Resize are implemented for modes nearest and linear, "
                         f"not {mode!r}")
    s = b.shape(x)
    gy = g[0]
    for d in range(len(s)):
        if factors[d] == 1.0 and out[d] == s[d]:
            continue
        gy = _resize_axis_transpose(b, gy, d, resize_matrix(mode, coord, nearest, factors[d], s[d], out[d]))
    return [gy, None, None, None]


adjoint("Upsample", nondiff=(1,))(_resize_adj)


# ---------------------------------------------------------------------- compile-time-only operators


@adjoint(["Shape", "Size", "ConstantOfShape", "EyeLike", "Constant"], nondiff=(0,))
def _shape_like_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Outputs that depend on the input's shape (or nothing) only: the input's gradient is zero."""
    return [None]


@adjoint("Range")
def _range_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Range is folded at import time; differentiating through it is not supported."""
    from ..errors import ModelError

    raise ModelError(f"{node.describe()}: Range is not differentiable in portable (its inputs must be "
                     f"compile-time constants, so no gradient can flow to them)")
