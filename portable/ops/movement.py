"""Data movement: reshapes, transposes, concatenation, slicing, gathering, padding, tiling.

All are ``Pattern.INJECTIVE``: each output element reads one input element at a computed index,
so they inline into whatever consumes them. Ops whose result is fully known at compile time
(Shape, Size, Constant, ConstantOfShape, Range) are evaluated by the importer; they are
registered so the importer recognises them, with a compute used only for runtime inputs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tvm import te, tirx

from ..errors import UnsupportedAttributeError
from .common import broadcast_index, broadcast_shape, normalize_axis
from .registry import Attrs, Pattern, const_value, register, shape_of


def _unravel(flat: "tirx.PrimExpr", shape: Sequence[int]) -> list:
    idx = []
    for d in reversed(shape):
        idx.append(tirx.floormod(flat, d) if d != 1 else tirx.const(0, "int32"))
        flat = tirx.floordiv(flat, d)
    return idx[::-1]


def reshape_to(x: te.Tensor, new_shape: Sequence[int], name: str = "reshape") -> te.Tensor:
    """Row-major reshape of ``x`` to ``new_shape`` (element counts must match)."""
    old = shape_of(x)
    new_shape = tuple(int(s) for s in new_shape)
    if int(np.prod(old)) != int(np.prod(new_shape)):
        raise ValueError(f"cannot reshape {old} to {new_shape}")
    if tuple(old) == new_shape:
        return te.compute(new_shape, lambda *i: x[i], name=name, tag="injective")

    def body(*idx):  # type: ignore[no-untyped-def]
        flat = tirx.const(0, "int64") if not idx else 0
        for i, d in zip(idx, new_shape):
            flat = flat * d + i
        return x[tuple(_unravel(flat, old))]

    return te.compute(new_shape, body, name=name, tag="injective")


def infer_reshape(old: Sequence[int], target: Sequence[int], allowzero: bool) -> tuple[int, ...]:
    """ONNX Reshape semantics for 0 (copy) and -1 (infer) entries."""
    out = []
    for i, s in enumerate(target):
        s = int(s)
        out.append(old[i] if s == 0 and not allowzero else s)
    if out.count(-1) > 1:
        raise ValueError(f"shape {list(target)} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        total = int(np.prod(old))
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {tuple(old)} to {list(target)}")
        out[out.index(-1)] = total // known
    return tuple(out)


@register("Reshape", Pattern.INJECTIVE, "elemwise", const_inputs=(1,), since_version=5)
def reshape(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Reshape (shape is a constant input)."""
    x = ins[0]
    target = const_value(ins[1], attrs, "shape").tolist()
    try:
        new = infer_reshape(shape_of(x), target, bool(attrs.get("allowzero", 0)))
        return [reshape_to(x, new)]
    except ValueError as exc:
        raise attrs.fail(str(exc)) from exc


@register("Flatten", Pattern.INJECTIVE, "elemwise")
def flatten(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Flatten to 2-D at ``axis``."""
    x = ins[0]
    s = shape_of(x)
    axis = normalize_axis(attrs.get("axis", 1), len(s))
    return [reshape_to(x, (int(np.prod(s[:axis])), int(np.prod(s[axis:]))), name="flatten")]


def _compile_time_only(op_type: str) -> None:
    @register(op_type, Pattern.OPAQUE, "generic")
    def compute(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
        raise attrs.fail(f"{op_type} must be computable at compile time (its inputs must be constants)")


for _op in ("Shape", "Size", "Constant", "ConstantOfShape", "Range", "EyeLike"):
    _compile_time_only(_op)


# ---------------------------------------------------------------------------------------------
# helpers


def _inj(shape: Sequence[int], body, name: str) -> te.Tensor:  # type: ignore[no-untyped-def]
    """An injective ``te.compute`` over ``shape``."""
    return te.compute(tuple(int(s) for s in shape), body, name=name, tag="injective")


def _axes_list(values: Sequence[int], rank: int, attrs: Attrs, what: str) -> list[int]:
    """Normalise ONNX axes (negative allowed) against ``rank``; fail on out-of-range or repeats."""
    out = []
    for a in values:
        a = int(a)
        if not -rank <= a < rank:
            raise attrs.fail(f"{what} {a} is out of range for rank {rank}")
        out.append(a + rank if a < 0 else a)
    if len(set(out)) != len(out):
        raise attrs.fail(f"{what} {list(values)} contains a repeated axis")
    return out


def _axis(attrs: Attrs, rank: int, default: int | None = 0, name: str = "axis") -> int:
    """The single ``axis`` attribute, normalised and range-checked."""
    a = attrs.get(name, default)
    if a is None:
        raise attrs.fail(f"attribute '{name}' is required")
    return _axes_list([a], rank, attrs, name)[0]


def _attr_or_input(ins: Sequence, index: int, attrs: Attrs, name: str, since: int) -> list[int] | None:
    """A list given as attribute ``name`` before opset ``since`` and as constant input ``index`` after."""
    if attrs.opset < since:
        value = attrs.get(name)
        return None if value is None else [int(v) for v in value]
    x = ins[index] if len(ins) > index else None
    if x is None:
        return None
    return [int(v) for v in const_value(x, attrs, name).reshape(-1).tolist()]


def _int_index(idx: "tirx.PrimExpr", dim: int) -> "tirx.PrimExpr":
    """A runtime index tensor element made non-negative (ONNX: -dim..dim-1) and clamped in range."""
    i = idx.astype("int64")
    i = tirx.Select(i < 0, i + tirx.const(dim, "int64"), i)
    i = tirx.max(tirx.min(i, tirx.const(dim - 1, "int64")), tirx.const(0, "int64"))
    return i.astype("int32")


def _int_dtype(t: te.Tensor, attrs: Attrs, what: str) -> None:
    """Fail unless ``t`` holds integers."""
    if not str(t.dtype).startswith(("int", "uint")):
        raise attrs.fail(f"input '{what}' must be an integer tensor, got {t.dtype}")


# ---------------------------------------------------------------------------------------------
# permutations and rank changes


@register("Transpose", Pattern.INJECTIVE, "elemwise")
def transpose(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Transpose (``perm`` defaults to reversing the axes)."""
    x = ins[0]
    s = shape_of(x)
    perm = attrs.get("perm")
    perm = list(range(len(s)))[::-1] if perm is None else [int(p) for p in perm]
    if sorted(perm) != list(range(len(s))):
        raise attrs.fail(f"perm {perm} is not a permutation of the {len(s)} axes of input shape {s}")
    inv = [perm.index(i) for i in range(len(s))]
    return [_inj([s[p] for p in perm], lambda *i: x[tuple(i[inv[d]] for d in range(len(s)))], "transpose")]


@register("Squeeze", Pattern.INJECTIVE, "elemwise", const_inputs=(1,))
def squeeze(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Squeeze (axes attribute before opset 13, optional constant input after)."""
    x = ins[0]
    s = shape_of(x)
    axes = _attr_or_input(ins, 1, attrs, "axes", 13)
    if not axes:
        axes = [i for i, d in enumerate(s) if d == 1]
    else:
        axes = _axes_list(axes, len(s), attrs, "axes")
    bad = [a for a in axes if s[a] != 1]
    if bad:
        raise attrs.fail(f"cannot squeeze axes {bad} of input shape {s}: their size is not 1")
    keep = [i for i in range(len(s)) if i not in axes]

    def body(*i):  # type: ignore[no-untyped-def]
        pos = dict(zip(keep, i))
        return x[tuple(pos.get(d, 0) for d in range(len(s)))]

    return [_inj([s[d] for d in keep], body, "squeeze")]


@register("Unsqueeze", Pattern.INJECTIVE, "elemwise", const_inputs=(1,))
def unsqueeze(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Unsqueeze (axes attribute before opset 13, constant input after; relative to output rank)."""
    x = ins[0]
    s = shape_of(x)
    axes = _attr_or_input(ins, 1, attrs, "axes", 13)
    if axes is None:
        raise attrs.fail("Unsqueeze needs 'axes'")
    rank = len(s) + len(axes)
    axes = _axes_list(axes, rank, attrs, "axes")
    keep = [d for d in range(rank) if d not in axes]
    out = [1] * rank
    for d, size in zip(keep, s):
        out[d] = size
    return [_inj(out, lambda *i: x[tuple(i[d] for d in keep)], "unsqueeze")]


@register("DepthToSpace", Pattern.INJECTIVE, "elemwise")
def depth_to_space(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX DepthToSpace, modes DCR (default) and CRD, on NCHW input."""
    x = ins[0]
    bs, mode = int(attrs.get("blocksize", 0)), attrs.get("mode", "DCR")
    s = shape_of(x)
    if len(s) != 4 or bs <= 0 or s[1] % (bs * bs):
        raise attrs.fail(f"needs a 4-D input whose channels divide by blocksize^2; got shape {s}, blocksize {bs}")
    if mode not in ("DCR", "CRD"):
        raise attrs.fail(f"mode must be 'DCR' or 'CRD', got {mode!r}")
    c = s[1] // (bs * bs)

    def body(n, ch, h, w):  # type: ignore[no-untyped-def]
        i, j = tirx.floormod(h, bs), tirx.floormod(w, bs)
        src = (i * bs + j) * c + ch if mode == "DCR" else ch * bs * bs + i * bs + j
        return x[n, src, tirx.floordiv(h, bs), tirx.floordiv(w, bs)]

    return [_inj((s[0], c, s[2] * bs, s[3] * bs), body, "depth_to_space")]


@register("SpaceToDepth", Pattern.INJECTIVE, "elemwise")
def space_to_depth(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX SpaceToDepth on NCHW input, modes DCR (default) and CRD (``mode`` exists from opset 28)."""
    x = ins[0]
    bs, mode = int(attrs.get("blocksize", 0)), attrs.get("mode", "DCR")
    s = shape_of(x)
    if len(s) != 4 or bs <= 0 or s[2] % bs or s[3] % bs:
        raise attrs.fail(f"needs a 4-D input whose H and W divide by blocksize; got shape {s}, blocksize {bs}")
    if mode not in ("DCR", "CRD"):
        raise attrs.fail(f"mode must be 'DCR' or 'CRD', got {mode!r}")
    c = s[1]

    def body(n, ch, h, w):  # type: ignore[no-untyped-def]
        if mode == "DCR":  # output channel = block * C + input channel
            blk, src_c = tirx.floordiv(ch, c), tirx.floormod(ch, c)
        else:  # CRD: output channel = input channel * bs^2 + block
            blk, src_c = tirx.floormod(ch, bs * bs), tirx.floordiv(ch, bs * bs)
        return x[n, src_c, h * bs + tirx.floordiv(blk, bs), w * bs + tirx.floormod(blk, bs)]

    return [_inj((s[0], c * bs * bs, s[2] // bs, s[3] // bs), body, "space_to_depth")]


# ---------------------------------------------------------------------------------------------
# joining and splitting


@register("Concat", Pattern.INJECTIVE, "elemwise")
def concat(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Concat along ``axis`` (negative allowed)."""
    xs = [t for t in ins if t is not None]
    if not xs:
        raise attrs.fail("needs at least one input")
    shapes = [shape_of(t) for t in xs]
    rank = len(shapes[0])
    axis = _axis(attrs, rank, None)
    for k, (t, s) in enumerate(zip(xs, shapes)):
        if len(s) != rank or any(a != b for d, (a, b) in enumerate(zip(s, shapes[0])) if d != axis):
            raise attrs.fail(f"input {k} has shape {s}, which does not match {shapes[0]} outside axis {axis}")
        if t.dtype != xs[0].dtype:
            raise attrs.fail(f"input {k} has dtype {t.dtype}, expected {xs[0].dtype}")
    parts = [(t, s[axis]) for t, s in zip(xs, shapes) if s[axis] > 0] or [(xs[0], 0)]
    out = list(shapes[0])
    out[axis] = sum(n for _, n in parts)

    def body(*i):  # type: ignore[no-untyped-def]
        offsets = np.cumsum([0] + [n for _, n in parts]).tolist()
        t_last, _ = parts[-1]
        res = t_last[i[:axis] + (i[axis] - offsets[-2],) + i[axis + 1:]]
        for (t, _), off, end in reversed(list(zip(parts[:-1], offsets, offsets[1:]))):
            res = tirx.if_then_else(i[axis] < end, t[i[:axis] + (i[axis] - off,) + i[axis + 1:]], res)
        return res

    return [_inj(out, body, "concat")]


def _slice_axis(x: te.Tensor, axis: int, start: int, length: int, step: int, name: str) -> te.Tensor:
    """``length`` elements of ``x`` along ``axis`` from ``start`` by ``step``."""
    s = list(shape_of(x))
    s[axis] = length
    return _inj(s, lambda *i: x[i[:axis] + (start + i[axis] * step,) + i[axis + 1:]], name)


def _split_sizes(ins: Sequence, attrs: Attrs, dim: int) -> list[int]:
    """Chunk sizes of ONNX Split across versions (split attr/input, num_outputs, equal split)."""
    split = _attr_or_input(ins, 1, attrs, "split", 13)
    if split:
        if sum(split) != dim or any(p < 0 for p in split):
            raise attrs.fail(f"split sizes {split} do not add up to the axis length {dim}")
        return split
    n = attrs.get("num_outputs") if attrs.opset >= 18 else None
    n = int(n) if n is not None else attrs.n_outputs
    if not n or n < 1:
        raise attrs.fail("cannot tell how many outputs to split into (give 'split' or 'num_outputs')")
    chunk = -(-dim // n)
    sizes = [min(chunk, max(dim - k * chunk, 0)) for k in range(n)]
    if any(p <= 0 for p in sizes):
        raise attrs.fail(f"cannot split an axis of length {dim} into {n} non-empty parts")
    return sizes


@register("Split", Pattern.INJECTIVE, "elemwise", const_inputs=(1,))
def split(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Split; several outputs. An uneven split gives the last output the remainder."""
    x = ins[0]
    s = shape_of(x)
    axis = _axis(attrs, len(s))
    outs, start = [], 0
    for k, size in enumerate(_split_sizes(ins, attrs, s[axis])):
        outs.append(_slice_axis(x, axis, start, size, 1, f"split{k}"))
        start += size
    return outs


# ---------------------------------------------------------------------------------------------
# slicing and gathering


def _slice_params(ins: Sequence, attrs: Attrs, rank: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """(starts, ends, axes, steps) of Slice: attributes before opset 10, constant inputs after."""
    if attrs.opset < 10:
        starts, ends, axes = attrs.get("starts"), attrs.get("ends"), attrs.get("axes")
        steps = None
    else:
        starts, ends, axes, steps = (None if i >= len(ins) or ins[i] is None
                                     else const_value(ins[i], attrs, n).reshape(-1).tolist()
                                     for i, n in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")))
    if starts is None or ends is None or len(starts) != len(ends):
        raise attrs.fail(f"starts {starts} and ends {ends} must be given with equal lengths")
    axes = list(range(len(starts))) if axes is None or len(axes) == 0 else list(axes)
    steps = [1] * len(starts) if steps is None or len(steps) == 0 else list(steps)
    if not len(axes) == len(steps) == len(starts):
        raise attrs.fail(f"axes {axes} and steps {steps} must have the length of starts {starts}")
    if any(int(st) == 0 for st in steps):
        raise attrs.fail(f"steps {steps} must not contain 0")
    return ([int(v) for v in starts], [int(v) for v in ends], _axes_list(axes, rank, attrs, "axes"),
            [int(v) for v in steps])


@register("Slice", Pattern.INJECTIVE, "elemwise", const_inputs=(1, 2, 3, 4))
def slice_(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Slice with numpy clamping rules (negative starts/ends/steps, INT_MAX ends)."""
    x = ins[0]
    s = shape_of(x)
    starts, ends, axes, steps = _slice_params(ins, attrs, len(s))
    begin, step, out = [0] * len(s), [1] * len(s), list(s)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        b, e, sp = slice(st, en, sp).indices(s[ax])
        begin[ax], step[ax], out[ax] = b, sp, len(range(b, e, sp))
    # an empty slice (some axis of length 0) is fine: the importer makes empty results constants
    return [_inj(out, lambda *i: x[tuple(b + sp * k for b, sp, k in zip(begin, step, i))], "slice")]


@register("Gather", Pattern.INJECTIVE, "elemwise")
def gather(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Gather along ``axis``; indices may be runtime tensors (negative ones wrap, all are clamped)."""
    x, idx = ins[0], ins[1]
    _int_dtype(idx, attrs, "indices")
    s, si = shape_of(x), shape_of(idx)
    axis = _axis(attrs, len(s))
    out = s[:axis] + si + s[axis + 1:]
    k = len(si)

    def body(*i):  # type: ignore[no-untyped-def]
        j = _int_index(idx[i[axis:axis + k]], s[axis])
        return x[i[:axis] + (j,) + i[axis + k:]]

    return [_inj(out, body, "gather")]


@register("GatherElements", Pattern.INJECTIVE, "elemwise")
def gather_elements(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX GatherElements: ``out[i] = x[i with i[axis] replaced by indices[i]]``."""
    x, idx = ins[0], ins[1]
    _int_dtype(idx, attrs, "indices")
    s, si = shape_of(x), shape_of(idx)
    axis = _axis(attrs, len(s))
    if len(si) != len(s) or any(a > b for d, (a, b) in enumerate(zip(si, s)) if d != axis):
        raise attrs.fail(f"indices shape {si} must have the rank of data {s} and fit inside it off the axis")

    def body(*i):  # type: ignore[no-untyped-def]
        return x[i[:axis] + (_int_index(idx[i], s[axis]),) + i[axis + 1:]]

    return [_inj(si, body, "gather_elements")]


# ---------------------------------------------------------------------------------------------
# broadcasting, tiling, padding


@register("Expand", Pattern.INJECTIVE, "elemwise", const_inputs=(1,))
def expand(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Expand: bidirectional (numpy) broadcast of the input with a constant shape."""
    x = ins[0]
    s = shape_of(x)
    target = [int(v) for v in const_value(ins[1], attrs, "shape").reshape(-1).tolist()]
    try:
        out = broadcast_shape(s, target)
    except ValueError as exc:
        raise attrs.fail(f"input shape {s} does not broadcast with shape {target}") from exc
    return [_inj(out, lambda *i: x[tuple(broadcast_index(x, i))], "expand")]


@register("Tile", Pattern.INJECTIVE, "elemwise", const_inputs=(1,))
def tile(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Tile with constant ``repeats``."""
    x = ins[0]
    s = shape_of(x)
    reps = [int(v) for v in const_value(ins[1], attrs, "repeats").reshape(-1).tolist()]
    if len(reps) != len(s) or any(r < 1 for r in reps):
        raise attrs.fail(f"repeats {reps} must hold one positive count per axis of input shape {s}")
    out = [d * r for d, r in zip(s, reps)]
    return [_inj(out, lambda *i: x[tuple(k if r == 1 else tirx.floormod(k, d)
                                         for k, d, r in zip(i, s, reps))], "tile")]


def _pad_params(ins: Sequence, attrs: Attrs, rank: int) -> tuple[list[int], list[int]]:
    """(begin, end) pads per axis: attribute before opset 11, constant input (with ``axes`` from 18) after."""
    if attrs.opset < 11:
        pads = [int(p) for p in (attrs.get("pads") or [])]
        axes = list(range(rank))
    else:
        pads = [int(p) for p in const_value(ins[1], attrs, "pads").reshape(-1).tolist()]
        given = ins[3] if attrs.opset >= 18 and len(ins) > 3 else None
        axes = (list(range(rank)) if given is None else
                _axes_list(const_value(given, attrs, "axes").reshape(-1).tolist(), rank, attrs, "axes"))
    if len(pads) != 2 * len(axes):
        raise attrs.fail(f"pads {pads} must have 2 * {len(axes)} entries (begins then ends)")
    begin, end = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[len(axes) + k]
    return begin, end


def _into_period(i: "tirx.PrimExpr", period: int, lo: int) -> "tirx.PrimExpr":
    """``i mod period`` for ``i >= lo``.

    Written as ``truncmod`` of a shifted, non-negative index on purpose: TVM 0.27's FlattenBuffer
    mis-simplifies ``floormod`` of an offset index once loops are fused (``(f % 8 + 2) % 4``
    becomes ``f % 4``), which broke Pad 'wrap'; ``truncmod`` is left alone.
    """
    shift = -(-max(-lo, 0) // period) * period
    return tirx.truncmod(i + shift, period)


def _pad_source(i: "tirx.PrimExpr", n: int, mode: str, lo: int) -> "tirx.PrimExpr":
    """Input coordinate read by padded coordinate ``i`` (shifted by the begin pad, ``i >= lo``)."""
    if mode == "edge" or n == 1:
        return tirx.max(tirx.min(i, n - 1), 0)
    if mode == "wrap":
        return _into_period(i, n, lo)
    period = 2 * (n - 1)
    j = _into_period(i, period, lo)
    return tirx.Select(j >= n, period - j, j)


@register("Pad", Pattern.INJECTIVE, "elemwise", const_inputs=(1, 3))
def pad(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Pad, modes constant/reflect/edge/wrap; negative pads crop."""
    x = ins[0]
    s = shape_of(x)
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise attrs.fail(f"mode must be constant, reflect, edge or wrap, got {mode!r}")
    begin, end = _pad_params(ins, attrs, len(s))
    out = [d + b + e for d, b, e in zip(s, begin, end)]
    if any(d <= 0 for d in out):
        raise attrs.fail(f"pads {begin + end} leave an empty output from input shape {s}")
    padded = [d for d in range(len(s)) if begin[d] or end[d]]
    value = _pad_value(ins, attrs, x.dtype)

    def body(*i):  # type: ignore[no-untyped-def]
        src = list(i)
        for d in padded:
            src[d] = i[d] - begin[d]
        if mode != "constant":
            return x[tuple(_pad_source(src[d], s[d], mode, -begin[d]) if d in padded else src[d]
                           for d in range(len(s)))]
        inside = [tirx.all(src[d] >= 0, src[d] < s[d]) for d in padded if begin[d] > 0 or end[d] > 0]
        if not inside:
            return x[tuple(src)]
        return tirx.if_then_else(tirx.all(*inside), x[tuple(src)], value)

    return [_inj(out, body, "pad")]


def _pad_value(ins: Sequence, attrs: Attrs, dtype: str) -> "tirx.PrimExpr":
    """The constant-mode fill: ``value`` attribute before opset 11, optional scalar input after."""
    if attrs.opset < 11:
        return tirx.const(attrs.get("value", 0.0), dtype)
    v = ins[2] if len(ins) > 2 else None
    if v is None:
        return tirx.const(0, dtype)
    if isinstance(v, np.ndarray):
        return tirx.const(v.reshape(-1)[0].item(), dtype)
    if int(np.prod(shape_of(v))) != 1:
        raise attrs.fail(f"constant_value must be a scalar, got shape {shape_of(v)}")
    return v[tuple(0 for _ in v.shape)].astype(dtype)


# ---------------------------------------------------------------------------------------------
# resizing

_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _f64(v: float) -> "tirx.PrimExpr":
    """A float64 immediate (resize coordinates are computed in double, like the reference)."""
    return tirx.const(float(v), "float64")


def _source_coord(y: "tirx.PrimExpr", mode: str, scale: float, n_in: int, n_out: int) -> "tirx.PrimExpr":
    """Input coordinate (float64) of output index ``y`` along one axis, as the ONNX reference computes it."""
    yf = y.astype("float64")
    width = scale * n_in  # the reference uses the un-rounded output width
    if mode == "asymmetric":
        return yf / _f64(scale)
    if mode == "align_corners":
        return _f64(0.0) if width == 1 else yf * _f64(n_in - 1) / _f64(width - 1)
    if mode == "pytorch_half_pixel" and width == 1:
        return _f64(-0.5)
    x = (yf + _f64(0.5)) / _f64(scale) - _f64(0.5)
    if mode == "half_pixel_symmetric":
        x = x + _f64(n_in / 2 * (1 - n_out / width))
    return x


def _nearest(x: "tirx.PrimExpr", mode: str, scale: float, n_in: int) -> "tirx.PrimExpr":
    """Nearest input index of coordinate ``x`` under ``nearest_mode``, clamped into the axis."""
    if mode == "simple":  # opset-10 Resize and Upsample (onnxruntime): floor upsampling, ceil downsampling
        mode = "ceil" if scale < 1 else "floor"
    if mode == "round_prefer_floor":
        r = te.ceil(x - _f64(0.5))
    elif mode == "round_prefer_ceil":
        r = te.floor(x + _f64(0.5))
    elif mode == "floor":
        r = te.floor(x)
    else:
        r = te.ceil(x)
    return tirx.max(tirx.min(r.astype("int32"), n_in - 1), 0)


def _resize_compute(x: te.Tensor, out: list[int], scales: list[float], mode: str, coord: str,
                    nearest_mode: str) -> te.Tensor:
    """Nearest or (multi-)linear resize of ``x`` to ``out``; axes with scale 1 and equal size are copied."""
    s = shape_of(x)
    moved = [d for d in range(len(s)) if not (scales[d] == 1.0 and out[d] == s[d])]

    def body(*i):  # type: ignore[no-untyped-def]
        coords = {d: _source_coord(i[d], coord, scales[d], s[d], out[d]) for d in moved}
        if mode == "nearest":
            src = list(i)
            for d in moved:
                src[d] = _nearest(coords[d], nearest_mode, scales[d], s[d])
            return x[tuple(src)]
        lo = {d: te.floor(coords[d]) for d in moved}
        frac = {d: (coords[d] - lo[d]) for d in moved}
        acc = None
        for corner in range(1 << len(moved)):
            src, weight = list(i), _f64(1.0)
            for bit, d in enumerate(moved):
                up = (corner >> bit) & 1
                k = lo[d].astype("int32") + up
                src[d] = tirx.max(tirx.min(k, s[d] - 1), 0)
                weight = weight * (frac[d] if up else _f64(1.0) - frac[d])
            term = x[tuple(src)].astype("float64") * weight
            acc = term if acc is None else acc + term
        return acc.astype(x.dtype)

    return _inj(out, body, "resize")


def _resize_geometry(x: te.Tensor, attrs: Attrs, scales: np.ndarray | None,
                     sizes: np.ndarray | None) -> tuple[list[int], list[float]]:
    """Output shape and per-axis scale from ONNX ``scales``/``sizes`` (with ``axes`` and aspect policy)."""
    s = shape_of(x)
    rank = len(s)
    axes = attrs.get("axes") if attrs.opset >= 18 else None
    axes = list(range(rank)) if axes is None else _axes_list(axes, rank, attrs, "axes")
    if sizes is not None:
        sizes = [int(v) for v in sizes.reshape(-1)]
        if len(sizes) != len(axes):
            raise attrs.fail(f"sizes {sizes} must have one entry per resized axis ({len(axes)})")
        full = list(s)
        for a, v in zip(axes, sizes):
            full[a] = v
        factors = [full[d] / s[d] for d in range(rank)]
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            if policy not in ("not_larger", "not_smaller"):
                raise attrs.fail(f"keep_aspect_ratio_policy {policy!r} is not stretch/not_larger/not_smaller")
            pick = min if policy == "not_larger" else max
            one = pick(factors[a] for a in axes)
            factors = [one if d in axes else 1.0 for d in range(rank)]
            full = [int(one * s[d] + 0.5) if d in axes else s[d] for d in range(rank)]
        return full, factors
    if scales is None:
        raise attrs.fail("needs either 'scales' or 'sizes'")
    given = [float(v) for v in scales.reshape(-1)]
    if len(given) != len(axes) or any(v <= 0 for v in given):
        raise attrs.fail(f"scales {given} must hold one positive factor per resized axis ({len(axes)})")
    factors = [1.0] * rank
    for a, v in zip(axes, given):
        factors[a] = v
    return [int(f * d) for f, d in zip(factors, s)], factors


def _nonempty(v: np.ndarray | None) -> np.ndarray | None:
    """``v``, or None when it is absent or an empty placeholder tensor."""
    return v if v is not None and v.size > 0 else None


@register("Resize", Pattern.INJECTIVE, "elemwise", const_inputs=(1, 2, 3), since_version=10)
def resize(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Resize, modes nearest (every nearest_mode) and linear; scales/sizes are constants.

    Opset 10 (``X, scales``) uses asymmetric coordinates and onnxruntime's nearest rounding.
    """
    x = ins[0]
    mode = attrs.get("mode", "nearest")
    if attrs.opset < 11:
        scales, sizes = _nonempty(const_value(ins[1], attrs, "scales")), None
        coord, nearest_mode = "asymmetric", "simple"
    else:
        scales = _nonempty(const_value(ins[2], attrs, "scales")) if len(ins) > 2 and ins[2] is not None else None
        sizes = _nonempty(const_value(ins[3], attrs, "sizes")) if len(ins) > 3 and ins[3] is not None else None
        coord = attrs.get("coordinate_transformation_mode", "half_pixel")
        nearest_mode = attrs.get("nearest_mode", "round_prefer_floor")
        _check_resize_attrs(attrs, mode, coord, nearest_mode)
    if (scales is None) == (sizes is None):
        raise attrs.fail("exactly one of 'scales' and 'sizes' must be given")
    return [_resize(x, attrs, mode, coord, nearest_mode, scales, sizes)]


def _unsupported(attrs: Attrs, op_type: str, attribute: str, value: object,
                 supported: str) -> UnsupportedAttributeError:
    """The error for a valid ONNX attribute variant portable deliberately does not implement."""
    return UnsupportedAttributeError(attrs.node_desc, op_type, attribute, value, supported, attrs.opset)


def _check_resize_attrs(attrs: Attrs, mode: str, coord: str, nearest_mode: str) -> None:
    """Reject Resize attribute values portable does not implement, naming them."""
    if coord == "tf_crop_and_resize":
        raise _unsupported(attrs, "Resize", "coordinate_transformation_mode", coord,
                           f"supported: {', '.join(_COORD_MODES)}")
    if coord not in _COORD_MODES:
        raise attrs.fail(f"coordinate_transformation_mode {coord!r} is not one of {_COORD_MODES}")
    if nearest_mode not in _NEAREST_MODES:
        raise attrs.fail(f"nearest_mode {nearest_mode!r} is not one of {_NEAREST_MODES}")
    if mode == "nearest" and attrs.get("exclude_outside", 0):
        raise attrs.fail("exclude_outside=1 is not supported with mode 'nearest'")


def _resize(x: te.Tensor, attrs: Attrs, mode: str, coord: str, nearest_mode: str,
            scales: np.ndarray | None, sizes: np.ndarray | None, op_type: str = "Resize") -> te.Tensor:
    """Shared Resize/Upsample body: validate the mode, derive the geometry, build the compute."""
    if mode == "cubic":
        raise _unsupported(attrs, op_type, "mode", mode, "supported: nearest, linear")
    if mode not in ("nearest", "linear"):
        raise attrs.fail(f"mode {mode!r} is not one of nearest, linear, cubic")
    out, factors = _resize_geometry(x, attrs, scales, sizes)
    if any(d <= 0 for d in out):
        raise attrs.fail(f"output shape {out} is empty")
    if mode == "linear":
        if "float" not in str(x.dtype):
            raise attrs.fail(f"mode 'linear' needs a float input, got {x.dtype}")
        moved = [d for d in range(len(out)) if not (factors[d] == 1.0 and out[d] == shape_of(x)[d])]
        if len(moved) > 3:
            raise attrs.fail(f"linear resize of {len(moved)} axes is not supported (at most 3)")
        if attrs.get("antialias", 0) and any(factors[d] < 1 for d in moved):
            raise _unsupported(attrs, op_type, "antialias", 1, "antialias=1 is supported only when no axis "
                               "is downsampled")
    return _resize_compute(x, out, factors, mode, coord, nearest_mode)


@register("Upsample", Pattern.INJECTIVE, "elemwise", const_inputs=(1,), since_version=7)
def upsample(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Upsample (opsets 7-9): ``scales`` attribute (7) or constant input (9), asymmetric coordinates."""
    x = ins[0]
    if attrs.opset < 9:
        scales = attrs.get("scales")
        if scales is None:
            raise attrs.fail("attribute 'scales' is required")
        scales = np.asarray(scales, dtype=np.float32)
    else:
        scales = const_value(ins[1], attrs, "scales")
    if np.any(scales < 1):
        raise attrs.fail(f"scales {scales.tolist()} must all be >= 1")
    return [_resize(x, attrs, attrs.get("mode", "nearest"), "asymmetric", "simple", scales, None, "Upsample")]
