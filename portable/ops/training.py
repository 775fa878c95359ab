"""Operators used by training graphs: losses, their gradients, optimizer updates and helpers.

ONNX losses (SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss) follow the ONNX semantics
(class weights, ``ignore_index``, ``reduction`` none/sum/mean). The other operators are
portable-internal (they never appear in exported ONNX models): gradient kernels that have no
ONNX counterpart (``SumTo``, ``ConvWeightGrad``, ``MaxPoolGrad``...) and fused optimizer updates
whose learning rate and bias corrections are runtime scalars, so changing them never recompiles.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tvm import te, tirx

from .common import broadcast_index, broadcast_shape, const, guarded_read
from .conv import conv2d_nchw, pad_nchw
from .elementwise import elementwise
from .matmul import batch_matmul
from .registry import Attrs, Pattern, register, shape_of

# ---------------------------------------------------------------------- shape helpers


@register("SumTo", Pattern.ANCHOR, "generic")
def sum_to(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Sum over the axes numpy broadcasting added or expanded to go from attr ``shape`` to the input."""
    x = ins[0]
    src, dst = shape_of(x), tuple(int(s) for s in attrs.get("shape"))
    if len(dst) > len(src) or broadcast_shape(src, dst) != src:
        raise attrs.fail(f"cannot sum shape {src} down to {dst}")
    lead = len(src) - len(dst)
    axes = [te.reduce_axis((0, src[i]), name=f"r{i}") for i in range(len(src))
            if i < lead or (dst[i - lead] == 1 and src[i] != 1)]
    if not axes:
        return [te.compute(dst, lambda *i: x[i], name="sum_to_copy", tag="injective")]

    def body(*idx):  # type: ignore[no-untyped-def]
        it = iter(axes)
        full = []
        for i in range(len(src)):
            if i < lead or (dst[i - lead] == 1 and src[i] != 1):
                full.append(next(it))
            else:
                full.append(idx[i - lead])
        return te.sum(x[tuple(full)], axis=axes)

    return [te.compute(dst, body, name="sum_to", tag="anchor")]


@register("BroadcastTo", Pattern.INJECTIVE, "elemwise")
def broadcast_to(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Numpy broadcast of the input to attr ``shape``."""
    x = ins[0]
    dst = tuple(int(s) for s in attrs.get("shape"))
    if broadcast_shape(shape_of(x), dst) != dst:
        raise attrs.fail(f"cannot broadcast {shape_of(x)} to {dst}")
    return [te.compute(dst, lambda *i: x[tuple(broadcast_index(x, i))], name="broadcast_to", tag="injective")]


@register("MatMulT", Pattern.ANCHOR, "matmul")
def matmul_t(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Batched ``op(A) @ op(B)`` where op transposes the last two axes when transA/transB is set."""
    try:
        return [batch_matmul(ins[0], ins[1], bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0)))]
    except ValueError as exc:
        raise attrs.fail(str(exc)) from exc


_CMP = {"gt": lambda a, b: a > b, "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b,
        "le": lambda a, b: a <= b, "eq": lambda a, b: a == b}


@register("Select", Pattern.ELEMWISE, "elemwise")
def select(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """``a if x <cmp> t else b`` elementwise (broadcasting), cmp one of gt/ge/lt/le/eq."""
    cmp = _CMP.get(attrs.get("cmp", "gt"))
    if cmp is None:
        raise attrs.fail(f"cmp must be one of {sorted(_CMP)}, got {attrs.get('cmp')!r}")
    return [elementwise("select", lambda x, t, a, b: tirx.Select(cmp(x, t), a, b), ins[:4])]


# ---------------------------------------------------------------------- losses


def _loss_parts(ins: Sequence[te.Tensor], attrs: Attrs):  # type: ignore[no-untyped-def]
    """Shared setup of the two ONNX losses: shapes, label, weight and validity expressions."""
    x, labels = ins[0], ins[1]
    weights = ins[2] if len(ins) > 2 else None
    sx, sl = shape_of(x), shape_of(labels)
    if len(sx) < 2 or sl != sx[:1] + sx[2:]:
        raise attrs.fail(f"scores {sx} need shape (N, C, d...) and labels (N, d...), got labels {sl}")
    if "int" not in str(labels.dtype):
        raise attrs.fail(f"labels must be integers, got {labels.dtype}")
    ignore = attrs.get("ignore_index", None)
    reduction = attrs.get("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise attrs.fail(f"reduction must be none, sum or mean, got {reduction!r}")

    def label(idx):  # type: ignore[no-untyped-def]
        return labels[idx].astype("int32")

    def valid(idx):  # type: ignore[no-untyped-def]
        if ignore is None:
            return tirx.const(True, "bool")
        return labels[idx] != tirx.const(int(ignore), labels.dtype)

    def weight(idx):  # type: ignore[no-untyped-def]
        lab = label(idx)
        safe = tirx.Select(valid(idx), lab, tirx.const(0, "int32"))
        w = weights[safe] if weights is not None else const(1.0, x.dtype)
        return guarded_read(valid(idx), w, const(0.0, x.dtype))

    return x, sx, sl, label, valid, weight, reduction


def _reduce_loss(per: te.Tensor, wsum: te.Tensor | None, reduction: str, name: str) -> te.Tensor:
    """Apply ``reduction`` to per-element losses (``wsum`` is the per-element weight for mean)."""
    if reduction == "none":
        return per
    axes = [te.reduce_axis((0, d), name=f"l{i}") for i, d in enumerate(shape_of(per))]
    total = te.compute((), lambda: te.sum(per[tuple(axes)], axis=axes), name=f"{name}_sum", tag="anchor")
    if reduction == "sum":
        return total
    axes2 = [te.reduce_axis((0, d), name=f"w{i}") for i, d in enumerate(shape_of(per))]
    den = te.compute((), lambda: te.sum(wsum[tuple(axes2)], axis=axes2), name=f"{name}_den", tag="anchor")
    return te.compute((), lambda: total[()] / den[()], name=f"{name}_mean", tag="elemwise")


def _log_softmax(x: te.Tensor, name: str) -> te.Tensor:
    """log_softmax over axis 1 of an (N, C, d...) tensor."""
    s = shape_of(x)
    rest = s[:1] + s[2:]
    c1 = te.reduce_axis((0, s[1]), name="c1")
    c2 = te.reduce_axis((0, s[1]), name="c2")

    def at(idx, c):  # type: ignore[no-untyped-def]
        return x[(idx[0], c, *idx[1:])]

    mx = te.compute(rest, lambda *i: te.max(at(i, c1), axis=c1), name=f"{name}_max", tag="anchor")
    se = te.compute(rest, lambda *i: te.sum(te.exp(at(i, c2) - mx[i]), axis=c2), name=f"{name}_sumexp")
    return te.compute(s, lambda *i: x[i] - mx[(i[0], *i[2:])] - te.log(se[(i[0], *i[2:])]),
                      name=f"{name}_logp", tag="elemwise")


@register("SoftmaxCrossEntropyLoss", Pattern.OPAQUE, "generic", since_version=12)
def softmax_cross_entropy(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX SoftmaxCrossEntropyLoss: outputs (loss, log_prob)."""
    x, sx, sl, label, valid, weight, reduction = _loss_parts(ins, attrs)
    logp = _log_softmax(x, "sce")

    def per_body(*i):  # type: ignore[no-untyped-def]
        lab = tirx.Select(valid(i), label(i), tirx.const(0, "int32"))
        return -weight(i) * logp[(i[0], lab, *i[1:])]

    per = te.compute(sl, per_body, name="sce_per", tag="elemwise")
    wsum = te.compute(sl, lambda *i: weight(i), name="sce_w", tag="elemwise")
    return [_reduce_loss(per, wsum, reduction, "sce"), logp]


@register("NegativeLogLikelihoodLoss", Pattern.OPAQUE, "generic", since_version=12)
def nll_loss(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX NegativeLogLikelihoodLoss."""
    x, sx, sl, label, valid, weight, reduction = _loss_parts(ins, attrs)

    def per_body(*i):  # type: ignore[no-untyped-def]
        lab = tirx.Select(valid(i), label(i), tirx.const(0, "int32"))
        return -weight(i) * x[(i[0], lab, *i[1:])]

    per = te.compute(sl, per_body, name="nll_per", tag="elemwise")
    wsum = te.compute(sl, lambda *i: weight(i), name="nll_w", tag="elemwise")
    return [_reduce_loss(per, wsum, reduction, "nll")]


def _loss_grad(ins: Sequence[te.Tensor], attrs: Attrs, softmax: bool) -> list[te.Tensor]:
    """d loss / d scores (softmax=True) or d loss / d log-probabilities; ins = (dloss, x, labels[, w])."""
    g = ins[0]
    x, sx, sl, label, valid, weight, reduction = _loss_parts(ins[1:], attrs)
    if reduction == "mean":
        axes = [te.reduce_axis((0, d), name=f"w{i}") for i, d in enumerate(sl)]
        den = te.compute((), lambda: te.sum(weight(tuple(axes)), axis=axes), name="grad_den", tag="anchor")
        gscale = te.compute((), lambda: g[()] / den[()], name="grad_scale", tag="elemwise")
    else:
        gscale = g
    prob = None
    if softmax:
        logp = _log_softmax(x, "sceg")
        prob = logp

    def body(*i):  # type: ignore[no-untyped-def]
        rest = (i[0], *i[2:])
        gv = gscale[()] if reduction != "none" else gscale[rest]
        hit = tirx.Select(tirx.And(valid(rest), i[1] == label(rest)), const(1.0, x.dtype), const(0.0, x.dtype))
        if softmax:
            return gv * weight(rest) * (te.exp(prob[i]) - hit)
        return -gv * weight(rest) * hit

    return [te.compute(sx, body, name="loss_grad", tag="elemwise")]


@register("SoftmaxCrossEntropyLossGrad", Pattern.OPAQUE, "generic")
def softmax_cross_entropy_grad(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Gradient of SoftmaxCrossEntropyLoss w.r.t. the scores; inputs (dloss, scores, labels[, weights])."""
    return _loss_grad(ins, attrs, softmax=True)


@register("NegativeLogLikelihoodLossGrad", Pattern.OPAQUE, "generic")
def nll_loss_grad(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Gradient of NegativeLogLikelihoodLoss w.r.t. its input; inputs (dloss, input, target[, weights])."""
    return _loss_grad(ins, attrs, softmax=False)


# ---------------------------------------------------------------------- convolution / pooling gradients


def _pads2(attrs: Attrs) -> list[tuple[int, int]]:
    p = list(attrs.get("pads", [0, 0, 0, 0]))
    return [(int(p[0]), int(p[2])), (int(p[1]), int(p[3]))]


def _conv_geometry(attrs: Attrs) -> tuple[int, int, int, int, int, int, int]:
    """(kh, kw, sh, sw, dh, dw, groups) of a convolution gradient node."""
    kh, kw = (int(k) for k in attrs.get("kernel_shape"))
    sh, sw = (int(s) for s in attrs.get("strides", [1, 1]))
    dh, dw = (int(d) for d in attrs.get("dilations", [1, 1]))
    return kh, kw, sh, sw, dh, dw, int(attrs.get("group", 1))


def _wgrad_chunk(n: int, oh: int, ow: int, target: int = 256) -> tuple[int, int]:
    """(images, output rows) per reduction chunk of the weight gradient: the fewest giving ``target``
    output positions (whole images once one image has fewer)."""
    rows = next((r for r in range(1, oh + 1) if oh % r == 0 and r * ow >= target), oh)
    if rows < oh:
        return 1, rows
    imgs = next((m for m in range(1, n + 1) if n % m == 0 and m * oh * ow >= target), n)
    return imgs, oh


@register("ConvWeightGrad", Pattern.ANCHOR, "conv2d_wgrad")
def conv_weight_grad(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """dW of a 2-D grouped convolution; inputs (x, dy), attrs kernel_shape/strides/pads(4)/dilations/group.

    Dense convolutions (group 1) are a GEMM over the batch and output positions: x (padded) and dy
    are first transposed to channels-last (stages ``wgrad_xt`` and ``wgrad_dyt``) so a register
    tile of (input channels x output channels) reads both operands contiguously. The reduction is
    split in two: ``wgrad_part`` sums a chunk of a few output rows (or images) (the template keeps
    it in registers), the anchor ``conv_wgrad`` ([kh, kw, C, O]) sums the chunks, so each chunk of
    dy and x is loaded into cache once for all tiles; ``wgrad_out`` restores OIHW.
    """
    x, dy = ins[0], ins[1]
    n, c, h, w = shape_of(x)
    _, oc, oh, ow = shape_of(dy)
    kh, kw, sh, sw, dh, dw, groups = _conv_geometry(attrs)
    if groups == 1:
        (pt, pb), (pl, pr) = _pads2(attrs)
        hp, wp = h + pt + pb, w + pl + pr

        def xt_body(b, i, j, ci):  # type: ignore[no-untyped-def]
            ok = tirx.all(i >= pt, i < pt + h, j >= pl, j < pl + w)
            return tirx.if_then_else(ok, x[b, ci, i - pt, j - pl], const(0.0, x.dtype))

        xt = te.compute((n, hp, wp, c), xt_body, name="wgrad_xt", tag="injective")
        dyt = te.compute((n, oh, ow, oc), lambda b, i, j, o: dy[b, o, i, j], name="wgrad_dyt", tag="injective")
        imgs, rows = _wgrad_chunk(n, oh, ow)
        rb = te.reduce_axis((0, imgs), name="rb")
        rr = te.reduce_axis((0, rows), name="rr")
        rj = te.reduce_axis((0, ow), name="rj")

        def part_body(bo, io, y, z, ci, o):  # type: ignore[no-untyped-def]
            b, i = bo * imgs + rb, io * rows + rr
            return te.sum(dyt[b, i, rj, o] * xt[b, i * sh + y * dh, rj * sw + z * dw, ci], axis=[rb, rr, rj])

        part = te.compute((n // imgs, oh // rows, kh, kw, c, oc), part_body, name="wgrad_part")
        rn = te.reduce_axis((0, n // imgs), name="rn")
        ri = te.reduce_axis((0, oh // rows), name="ri")
        acc = te.compute((kh, kw, c, oc), lambda y, z, ci, o: te.sum(part[rn, ri, y, z, ci, o], axis=[rn, ri]),
                         name="conv_wgrad", tag="anchor")
        return [te.compute((oc, c, kh, kw), lambda o, ci, y, z: acc[y, z, ci, o], name="wgrad_out",
                           tag="injective")]
    icg, ocg = c // groups, oc // groups
    xp = pad_nchw(x, _pads2(attrs))
    rn = te.reduce_axis((0, n), name="rn")
    ri = te.reduce_axis((0, oh), name="ri")
    rj = te.reduce_axis((0, ow), name="rj")

    def body(o, ci, y, z):  # type: ignore[no-untyped-def]
        cin = (o // ocg) * icg + ci
        return te.sum(dy[rn, o, ri, rj] * xp[rn, cin, ri * sh + y * dh, rj * sw + z * dw], axis=[rn, ri, rj])

    return [te.compute((oc, icg, kh, kw), body, name="conv_wgrad_grouped", tag="anchor")]


@register("ConvDataGrad", Pattern.ANCHOR, "conv2d_dgrad")
def conv_data_grad(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """dX of a 2-D convolution; inputs (dy, w), attrs input_shape/kernel_shape/strides/pads(4)/dilations/group.

    Dense convolutions are a stride-1 convolution (same compute as Conv, anchor ``conv``) of dy,
    zero-dilated by the stride and padded (stage ``pad_dgrad``), with the flipped, in/out-swapped
    weights (stage ``dgrad_w``, [C, O, kh, kw]); grouped ones use ConvTranspose's algorithm.
    """
    dy, w = ins[0], ins[1]
    n, c, h, wd = (int(v) for v in attrs.get("input_shape"))
    _, oc, oh, ow = shape_of(dy)
    kh, kw, sh, sw, dh, dw, groups = _conv_geometry(attrs)
    (pt, pb), (pl, pr) = _pads2(attrs)
    if groups != 1:
        from .conv import conv_transpose

        opad = [h + pt + pb - ((oh - 1) * sh + (kh - 1) * dh + 1), wd + pl + pr - ((ow - 1) * sw + (kw - 1) * dw + 1)]
        sub = Attrs({"kernel_shape": [kh, kw], "strides": [sh, sw], "dilations": [dh, dw], "group": groups,
                     "pads": [pt, pl, pb, pr], "output_padding": opad}, attrs.opset, attrs.node_desc)
        return conv_transpose([dy, w], sub)
    # dX[h] = sum_k dy[(h + pt - k*dh) / sh] w[k]; with k' = kh-1-k: dyp[h + k'*dh] w[kh-1-k']
    lead_h, lead_w = pt - (kh - 1) * dh, pl - (kw - 1) * dw
    hp, wp = h + (kh - 1) * dh, wd + (kw - 1) * dw

    def dyp_body(b, o, u, v):  # type: ignore[no-untyped-def]
        yy, xx = u + lead_h, v + lead_w
        conds = [yy >= 0, xx >= 0, yy < oh * sh, xx < ow * sw]
        if sh > 1:
            conds.append(tirx.floormod(yy, sh) == 0)
        if sw > 1:
            conds.append(tirx.floormod(xx, sw) == 0)
        src = dy[b, o, tirx.floordiv(yy, sh) if sh > 1 else yy, tirx.floordiv(xx, sw) if sw > 1 else xx]
        return tirx.if_then_else(tirx.all(*conds), src, const(0.0, dy.dtype))

    dyp = te.compute((n, oc, hp, wp), dyp_body, name="pad_dgrad", tag="injective")
    wt = te.compute((c, oc, kh, kw), lambda ci, o, y, z: w[o, ci, kh - 1 - y, kw - 1 - z], name="dgrad_w",
                    tag="injective")
    return [conv2d_nchw(dyp, wt, [1, 1], [(0, 0), (0, 0)], [dh, dw], 1)]


def _window_sources(attrs: Attrs, in_hw: Sequence[int], out_hw: Sequence[int]):  # type: ignore[no-untyped-def]
    """For input position (h, w) and kernel tap (ky, kx): (condition, oh, ow) of the window using it."""
    kh, kw = (int(k) for k in attrs.get("kernel_shape"))
    sh, sw = (int(s) for s in attrs.get("strides", [1, 1]))
    dh, dw = (int(d) for d in attrs.get("dilations", [1, 1]))
    (pt, _), (pl, _) = _pads2(attrs)

    def at(h, w, ky, kx):  # type: ignore[no-untyped-def]
        yy, xx = h + pt - ky * dh, w + pl - kx * dw
        oh, ow = tirx.floordiv(yy, sh), tirx.floordiv(xx, sw)
        ok = tirx.all(yy >= 0, xx >= 0, tirx.floormod(yy, sh) == 0, tirx.floormod(xx, sw) == 0,
                      oh < out_hw[0], ow < out_hw[1])
        return ok, tirx.Select(ok, oh, 0), tirx.Select(ok, ow, 0)

    return kh, kw, at


@register("MaxPoolGrad", Pattern.ANCHOR, "generic")
def max_pool_grad(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """dX of 2-D MaxPool; inputs (x, y, dy). Each window's gradient goes to the inputs equal to its max."""
    x, y, dy = ins[0], ins[1], ins[2]
    s = shape_of(x)
    kh, kw, at = _window_sources(attrs, s[2:], shape_of(dy)[2:])
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def body(n, c, h, w):  # type: ignore[no-untyped-def]
        ok, oh, ow = at(h, w, ry, rx)
        hit = tirx.all(ok, x[n, c, h, w] == y[n, c, oh, ow])
        return te.sum(guarded_read(hit, dy[n, c, oh, ow], const(0.0, dy.dtype)), axis=[ry, rx])

    return [te.compute(s, body, name="maxpool_grad", tag="anchor")]


@register("AveragePoolGrad", Pattern.ANCHOR, "generic")
def avg_pool_grad(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """dX of 2-D AveragePool; inputs (dy), attrs include ``input_shape`` and ``count_include_pad``."""
    dy = ins[0]
    s = tuple(int(v) for v in attrs.get("input_shape"))
    kh, kw, at = _window_sources(attrs, s[2:], shape_of(dy)[2:])
    sh, sw = (int(v) for v in attrs.get("strides", [1, 1]))
    dh, dw = (int(d) for d in attrs.get("dilations", [1, 1]))
    (pt, pb), (pl, pr) = _pads2(attrs)
    include = int(attrs.get("count_include_pad", 0))
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def count(oh, ow):  # type: ignore[no-untyped-def]
        if include:
            lo_h, hi_h, lo_w, hi_w = -pt, s[2] + pb, -pl, s[3] + pr
        else:
            lo_h, hi_h, lo_w, hi_w = 0, s[2], 0, s[3]
        n_h = sum(tirx.Select(tirx.all(oh * sh - pt + k * dh >= lo_h, oh * sh - pt + k * dh < hi_h), 1, 0)
                  for k in range(kh))
        n_w = sum(tirx.Select(tirx.all(ow * sw - pl + k * dw >= lo_w, ow * sw - pl + k * dw < hi_w), 1, 0)
                  for k in range(kw))
        return tirx.max(n_h * n_w, 1).astype(dy.dtype)

    def body(n, c, h, w):  # type: ignore[no-untyped-def]
        ok, oh, ow = at(h, w, ry, rx)
        return te.sum(guarded_read(ok, dy[n, c, oh, ow] / count(oh, ow), const(0.0, dy.dtype)), axis=[ry, rx])

    return [te.compute(s, body, name="avgpool_grad", tag="anchor")]


@register("SliceGrad", Pattern.INJECTIVE, "elemwise")
def slice_grad(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Scatter a Slice's gradient into zeros of attr ``input_shape`` (per-axis ``begin`` and ``step``)."""
    g = ins[0]
    shape = tuple(int(v) for v in attrs.get("input_shape"))
    begin, step = list(attrs.get("begin")), list(attrs.get("step"))
    out = shape_of(g)

    def body(*i):  # type: ignore[no-untyped-def]
        conds, src = [], []
        for ax, (v, b0, sp, n) in enumerate(zip(i, begin, step, out)):
            d = v - b0 if sp > 0 else b0 - v
            a = abs(int(sp))
            conds += [d >= 0, tirx.floormod(d, a) == 0, tirx.floordiv(d, a) < n]
            src.append(tirx.floordiv(d, a))
        ok = tirx.all(*conds)
        return tirx.Select(ok, g[tuple(tirx.Select(ok, k, 0) for k in src)], const(0.0, g.dtype))

    return [te.compute(shape, body, name="slice_grad", tag="injective")]


@register("GatherGrad", Pattern.ANCHOR, "generic")
def gather_grad(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Scatter-add a Gather's gradient: inputs (indices, g), attrs ``axis``, ``input_shape``."""
    idx, g = ins[0], ins[1]
    shape = tuple(int(v) for v in attrs.get("input_shape"))
    axis = int(attrs.get("axis", 0))
    si = shape_of(idx)
    red = [te.reduce_axis((0, d), name=f"k{i}") for i, d in enumerate(si)] or [te.reduce_axis((0, 1), name="k")]
    dim = shape[axis]

    def body(*i):  # type: ignore[no-untyped-def]
        pos = tuple(red) if si else ()
        j = idx[pos].astype("int32")
        j = tirx.Select(j < 0, j + dim, j)
        src = i[:axis] + pos + i[axis + 1:]
        return te.sum(tirx.Select(j == i[axis], g[src], const(0.0, g.dtype)), axis=red)

    return [te.compute(shape, body, name="gather_grad", tag="anchor")]


# ---------------------------------------------------------------------- dropout


def _hash_uniform(flat: "tirx.PrimExpr", seed: "tirx.PrimExpr", dtype: str) -> "tirx.PrimExpr":
    """Counter-based uniform [0, 1) from (element index, seed): a 32-bit integer mixing hash."""
    u = "uint32"
    h = flat.astype(u) * tirx.const(0x9E3779B1, u) + seed.astype(u) * tirx.const(0x85EBCA77, u)
    h = h ^ (h >> tirx.const(16, u))
    h = h * tirx.const(0x7FEB352D, u)
    h = h ^ (h >> tirx.const(15, u))
    h = h * tirx.const(0x846CA68B, u)
    h = h ^ (h >> tirx.const(16, u))
    return (h >> tirx.const(8, u)).astype(dtype) * const(1.0 / (1 << 24), dtype)


@register("TrainingDropout", Pattern.ELEMWISE, "elemwise")
def training_dropout(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Dropout in training mode; inputs (x, step) with ``step`` an int scalar varying per run.

    Outputs (y, mask): mask[i] = 1 with probability 1 - ratio, drawn from a counter-based hash of
    (i, seed, step), and y = x * mask / (1 - ratio).
    """
    x, step = ins[0], ins[1]
    ratio = float(attrs.get("ratio", 0.5))
    if not 0.0 <= ratio < 1.0:
        raise attrs.fail(f"ratio must be in [0, 1), got {ratio}")
    seed = int(attrs.get("seed", 0)) & 0xFFFF
    s = shape_of(x)

    def keep(*i):  # type: ignore[no-untyped-def]
        flat = tirx.const(0, "int32")
        for v, d in zip(i, s):
            flat = flat * d + v
        mixed = step[()].astype("int32") * 65599 + seed
        return tirx.Select(_hash_uniform(flat, mixed, "float32") >= tirx.const(ratio, "float32"),
                           const(1.0, x.dtype), const(0.0, x.dtype))

    mask = te.compute(s, keep, name="dropout_mask", tag="elemwise")
    scale = const(1.0 / (1.0 - ratio), x.dtype)
    y = te.compute(s, lambda *i: x[i] * mask[i] * scale, name="dropout", tag="elemwise")
    return [y, mask]


@register("Dropout", Pattern.ELEMWISE, "elemwise", const_inputs=(1, 2))
def dropout_inference(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Dropout at inference: identity plus an all-true mask (training graphs use TrainingDropout)."""
    x = ins[0]
    y = te.compute(shape_of(x), lambda *i: x[i], name="dropout_identity", tag="elemwise")
    mask = te.compute(shape_of(x), lambda *i: tirx.const(True, "bool"), name="dropout_mask", tag="elemwise")
    return [y, mask]


# ---------------------------------------------------------------------- optimizer updates


def _as_dtype(t: te.Tensor, dtype: str) -> te.Tensor:
    """A 0-d runtime scalar in ``dtype``."""
    if str(t.dtype) == dtype:
        return t
    return te.compute((), lambda: t[()].astype(dtype), name="scalar_cast", tag="elemwise")


@register("SGDUpdate", Pattern.OPAQUE, "elemwise")
def sgd_update(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """inputs (param, grad, lr[, velocity]) -> (new param[, new velocity]); PyTorch SGD semantics."""
    p, g = ins[0], ins[1]
    lr = _as_dtype(ins[2], p.dtype)
    v = ins[3] if len(ins) > 3 else None
    mu, wd = float(attrs.get("momentum", 0.0)), float(attrs.get("weight_decay", 0.0))
    damp, nesterov = float(attrs.get("dampening", 0.0)), bool(attrs.get("nesterov", 0))
    dt = p.dtype

    def grad(i):  # type: ignore[no-untyped-def]
        return g[i] + p[i] * const(wd, dt) if wd else g[i]

    if v is None:
        return [te.compute(shape_of(p), lambda *i: p[i] - lr[()] * grad(i), name="sgd", tag="elemwise")]
    nv = te.compute(shape_of(p), lambda *i: v[i] * const(mu, dt) + grad(i) * const(1 - damp, dt),
                    name="sgd_velocity", tag="elemwise")

    def step(*i):  # type: ignore[no-untyped-def]
        d = grad(i) + nv[i] * const(mu, dt) if nesterov else nv[i]
        return p[i] - lr[()] * d

    return [te.compute(shape_of(p), step, name="sgd", tag="elemwise"), nv]


@register("AdamUpdate", Pattern.OPAQUE, "elemwise")
def adam_update(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """inputs (param, grad, m, v, lr, c1, c2) -> (param, m, v); c1/c2 = 1/(1-beta^t) bias corrections.

    ``decoupled=1`` is AdamW (weight decay applied to the parameter, not added to the gradient).
    """
    p, g, m, v = ins[:4]
    lr, c1, c2 = (_as_dtype(t, p.dtype) for t in ins[4:7])
    b1, b2 = float(attrs.get("beta1", 0.9)), float(attrs.get("beta2", 0.999))
    eps, wd = float(attrs.get("epsilon", 1e-8)), float(attrs.get("weight_decay", 0.0))
    decoupled = bool(attrs.get("decoupled", 0))
    dt, s = p.dtype, shape_of(p)

    def grad(i):  # type: ignore[no-untyped-def]
        return g[i] + p[i] * const(wd, dt) if wd and not decoupled else g[i]

    nm = te.compute(s, lambda *i: m[i] * const(b1, dt) + grad(i) * const(1 - b1, dt), name="adam_m", tag="elemwise")
    nv = te.compute(s, lambda *i: v[i] * const(b2, dt) + grad(i) * grad(i) * const(1 - b2, dt),
                    name="adam_v", tag="elemwise")

    def step(*i):  # type: ignore[no-untyped-def]
        base = p[i] * (const(1.0, dt) - lr[()] * const(wd, dt)) if wd and decoupled else p[i]
        return base - lr[()] * (nm[i] * c1[()]) / (te.sqrt(nv[i] * c2[()]) + const(eps, dt))

    return [te.compute(s, step, name="adam", tag="elemwise"), nm, nv]


# ---------------------------------------------------------------------- adjoints
from ..autodiff.registry import adjoint  # noqa: E402


@adjoint("SumTo")
def _sum_to_adj(b, node, g):  # type: ignore[no-untyped-def]
    return [b.broadcast_to(g[0], b.shape(node.inputs[0]))]


@adjoint("BroadcastTo")
def _broadcast_to_adj(b, node, g):  # type: ignore[no-untyped-def]
    return [b.unbroadcast(g[0], node.inputs[0])]


@adjoint("Select", nondiff=(0, 1))
def _select_adj(b, node, g):  # type: ignore[no-untyped-def]
    x, t, ya, yb = node.inputs[:4]
    zero = b.scalar(0.0, g[0])
    cmp = node.attrs.get("cmp", "gt")
    ga = b.unbroadcast(b.op("Select", x, t, g[0], zero, cmp=cmp), ya) if b.needs(2) else None
    gb = b.unbroadcast(b.op("Select", x, t, zero, g[0], cmp=cmp), yb) if b.needs(3) else None
    return [None, None, ga, gb]


def _loss_adj(grad_op: str):  # type: ignore[no-untyped-def]
    def fn(b, node, g):  # type: ignore[no-untyped-def]
        if len(g) > 1 and g[1] is not None:
            raise b_fail(node, "gradients through the log_prob output are not supported")
        if g[0] is None:
            return [None]
        ins = [g[0], *node.inputs[:3]]
        return [b.op(grad_op, *[i for i in ins if i], **node.attrs)]

    return fn


def b_fail(node, message: str) -> Exception:  # type: ignore[no-untyped-def]
    """A ModelError naming ``node``."""
    from ..errors import ModelError

    return ModelError(f"{node.describe()}: {message}")


adjoint("SoftmaxCrossEntropyLoss", nondiff=(1, 2))(_loss_adj("SoftmaxCrossEntropyLossGrad"))
adjoint("NegativeLogLikelihoodLoss", nondiff=(1, 2))(_loss_adj("NegativeLogLikelihoodLossGrad"))


@adjoint("TrainingDropout", nondiff=(1,))
def _dropout_adj(b, node, g):  # type: ignore[no-untyped-def]
    ratio = float(node.attrs.get("ratio", 0.5))
    return [b.scale(b.mul(g[0], node.outputs[1]), 1.0 / (1.0 - ratio)), None]


@adjoint("Dropout", nondiff=(1, 2))
def _dropout_inference_adj(b, node, g):  # type: ignore[no-untyped-def]
    return [g[0]]


del np
