"""x86 templates for 2-D convolution (NCHW data, OIHW weights) with fused epilogues.

Dense and grouped convolutions (``conv2d``): the output is computed in ``oc_block x ow_block``
register tiles. ``oc_block`` is a multiple of the SIMD width (16 fp32 lanes on AVX-512, 8 on
AVX2) so one weight vector covers it; each (input channel, ky, kx) step does one contiguous
weight-vector load, ``ow_block`` scalar broadcasts of the input row and ``ow_block`` FMAs.
``ow_block`` <= 14 keeps ``ow_block * oc_block / lanes`` accumulators inside the 32 zmm (16 ymm on
AVX2) register file with room for the weight vector. Constant weights are re-laid out once at
compile time as ``[OC/oc_block, IC, KH, KW, oc_block]`` (the NCHWc weight packing), so the weight
stream is sequential; the per-tile accumulator is laid out ``[ow, oc]`` so it vectorises along oc.
Padding is materialised once per call by its own parallel loop (keeping bounds checks out of the
inner loop), unless ``inline_pad`` folds it into the reduction.

Grouped convolutions whose groups do not fill a vector of output channels (ShuffleNet: 34 or 68
per group) may vectorise along the output row instead (``vector_axis="width"``, the default there):
per (input channel, ky, kx) one contiguous vector load of the row (stride 1), ``oc_block`` weight
broadcasts and FMAs into ``oc_block`` row accumulators. Measured (2 threads, kernel alone): 136
channels in 4 groups at 28x28, 1x1: 0.248 -> 0.069 ms; 272 channels at 14x14: 0.109 -> 0.079 ms;
544 channels at 7x7: 0.109 ms either way.

An unpadded 1x1 convolution can take those rows along the flattened image instead
(``vector_axis="pixels"``, where the image is a whole number of vectors): each accumulator is a full
vector of consecutive pixels whatever the row length, where a 28-column row fills 14 of 16 lanes
at best and 4 with a 4-column tile. ShuffleNet's 136-channel 1x1 in 4 groups at 28x28 (2 threads,
one-kernel model, in-process): 0.069 ms against 0.09 for 14-column rows and 0.16 for 4-column ones.

Depthwise convolutions (``groups == channels``) have no channel reduction to share a broadcast
across, so they vectorise along the output width instead.
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

from ..layout import SplitAxisRewrite
from ..common import block_name, blocks_named, divisors, inline_except_anchor, loop_extent, output_blocks, vectorize_inner
from ..registry import ScheduleContext, Template, register_template
from .generic import GenericX86
from .registers import keep_in_registers


def _conv_dims(sch: Schedule, ctx: ScheduleContext) -> dict[str, int]:
    blk = sch.get_sblock(ctx.anchor_block)
    ext = [loop_extent(sch, lp) for lp in sch.get_loops(blk)]
    n, oc, oh, ow, icg, kh, kw = ext
    groups = int(ctx.anchor_attrs.get("group", 1))
    return {"n": n, "oc": oc, "oh": oh, "ow": ow, "icg": icg, "kh": kh, "kw": kw, "groups": groups,
            "ocg": oc // groups}


def _is_depthwise(d: dict[str, int]) -> bool:
    return d["groups"] > 1 and d["icg"] == 1 and d["ocg"] == 1


def _oc_blocks(ocg: int, lanes: int) -> list[int]:
    # two vector registers of output channels first: with ow_block outputs that is 2 * ow_block
    # accumulators per broadcast input value (tuning on AVX-512 chose 32 channels for most layers)
    mult = [lanes * m for m in (2, 1) if ocg % (lanes * m) == 0]
    if mult:
        return mult
    return sorted([d for d in divisors(ocg, lanes) if d >= 4], reverse=True)[:2] or [max(divisors(ocg, lanes))]


def _row_budget(ctx: ScheduleContext) -> int:
    """Row accumulators (one vector each) beside the input vector and a weight broadcast."""
    return 24 if ctx.lanes >= 16 else 12


def _ow_blocks(ow: int, limit: int) -> list[int]:
    cands = sorted([d for d in divisors(ow, limit)], reverse=True)
    return cands[:4] or [1]


def _output_block(sch: Schedule, ctx: ScheduleContext, conv: Any, rank: int = 4) -> Any | None:
    """The single output block with the anchor's ``rank`` spatial loops (a copy stage if the anchor
    is itself the output), or None when the epilogue changes the shape."""
    outs = output_blocks(sch)
    if len(outs) != 1:
        return None
    out = sch.cache_write(conv, 0, "global") if block_name(sch, outs[0]) == ctx.anchor_block else outs[0]
    o_ext = [loop_extent(sch, lp) for lp in sch.get_loops(out)]
    c_ext = [loop_extent(sch, lp) for lp in sch.get_loops(conv)][:rank]
    return out if o_ext == c_ext else None


def _param_index(sch: Schedule, blk: Any, read_idx: int) -> int | None:
    buf = sch.get(blk).reads[read_idx].source
    return next((i for i, p in enumerate(sch.mod["main"].params) if p.same_as(buf)), None)


def _tile_output(sch: Schedule, conv: Any, out: Any, ocb: int, owb: int, rows_inner: bool) -> tuple[Any, Any]:
    """Tile the output into ``ocb`` channels x ``owb`` columns, parallel over (batch, channel tiles,
    rows), the convolution computed per tile; returns the tile's (channel, column) loops, in the
    order the vector axis wants them (``rows_inner``: columns innermost)."""
    n, oc, oh, ow = sch.get_loops(out)
    oco, oci = sch.split(oc, [None, ocb])
    owo, owi = sch.split(ow, [None, owb])
    sch.reorder(n, oco, oh, owo, *((oci, owi) if rows_inner else (owi, oci)))
    sch.parallel(sch.fuse(n, oco, oh))
    sch.compute_at(conv, owo, preserve_unit_loops=True)
    return oci, owi


def _tile_reduction(sch: Schedule, conv: Any, vector_oc: bool) -> None:
    """The reduction (input channels, ky, kx) outside the tile's rows; inside, the unrolled tile axis
    then the vector axis (output channels when ``vector_oc``, else the output columns)."""
    c_oc, c_oh, c_ow, rc, ry, rx = sch.get_loops(conv)[-6:]
    unrolled, vector = (c_ow, c_oc) if vector_oc else (c_oc, c_ow)
    sch.reorder(rc, ry, rx, c_oh, unrolled, vector)
    sch.unroll(unrolled)
    sch.vectorize(vector)
    sch.decompose_reduction(conv, rc)


def _schedule_pad(sch: Schedule, ctx: ScheduleContext) -> None:
    """Materialised padding without per-element bounds checks.

    Blocked ``[N, C/cb, H, W, cb]``: one pass, parallel over rows, one bounds check per channel
    vector. ResNet-18 layer2 3x3/2 (64 ch, 56x56), kernel with its pad, same process: 0.633 ms
    (min 0.552) against 0.650 (0.606) for the fill-then-copy below.
    NCHW: ``decompose_padding`` splits the stage into a constant fill of the whole buffer and an
    interior copy; both are then plain streams (memset / memcpy-like) vectorised over the fused rows,
    parallel over (n, c).
    """
    for blk in blocks_named(sch, "pad"):
        loops = sch.get_loops(blk)
        if len(loops) == 5:
            # the bounds check does not depend on the lane: each vector is written once, zeros or
            # the copy (the fill below writes the whole buffer, then the copy its interior again)
            sch.parallel(sch.fuse(*loops[:3]))
            sch.vectorize(loops[4])
            continue
        outer = sch.fuse(*loops[:2])
        sch.parallel(outer)
        try:
            fill = sch.decompose_padding(blk, sch.get_loops(blk)[1])
        except ScheduleError:
            fill = None
        for part in (fill, blk):
            if part is not None:
                inner = sch.get_loops(part)[1:]
                vectorize_inner(sch, part, ctx.lanes, sch.fuse(*inner) if len(inner) > 1 else inner[0])


class Conv2dX86(Template):
    """NCHW direct convolution, register-tiled over (oc, ow), packed constant weights."""

    family = "conv2d"
    target_family = "x86"
    knobs_before_records = {"vector_axis": "oc"}
    #: offers vectorising along the output row (``_dense_rows``) where channels do not fill vectors
    row_vectors = True

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """oc_block, ow_block, inline_pad, and vector_axis where a group's output channels do not
        fill vectors (depthwise: ow_block, inline_pad, vectorize)."""
        d = _conv_dims(sch, ctx)
        if _is_depthwise(d):
            # a strided row is a gather (no x86 strided load): scalar, unrolled FMAs beat it
            strided = any(s > 1 for s in ctx.anchor_attrs.get("strides", [1, 1]))
            # prefer one or half a register of outputs; longer rows only as tuning alternatives
            prefs = [ctx.lanes, ctx.lanes // 2, 14, 7, 28, 4, 2 * ctx.lanes]
            ow_blocks = [b for b in dict.fromkeys(prefs) if b >= 1 and d["ow"] % b == 0] or _ow_blocks(d["ow"], 16)
            return {"ow_block": ow_blocks, "inline_pad": [False, True], "vectorize": [not strided, strided]}
        limit = 14 if ctx.lanes >= 16 else 6
        space = {"oc_block": _oc_blocks(d["ocg"], ctx.lanes), "ow_block": _ow_blocks(d["ow"], limit),
                 "inline_pad": [False, True]}
        if self.row_vectors and d["ocg"] % ctx.lanes and all(s == 1 for s in ctx.anchor_attrs.get("strides", [1, 1])):
            # a group's output channels do not fill vectors (ShuffleNet: 68 per group): vectorise
            # along the output row instead, ``oc_block`` rows of accumulators ("width")
            rows = [b for b in divisors(d["ocg"], _row_budget(ctx)) if b >= 2]
            space["vector_axis"] = ["width", "oc"]
            space["oc_block"] = list(dict.fromkeys(sorted(rows, reverse=True)[:3] + space["oc_block"]))
            # also a full vector of columns where it divides the row, and the whole row where it fits one
            widths = [b for b in (ctx.lanes, d["ow"]) if d["ow"] % b == 0 and b <= ctx.lanes]
            space["ow_block"] = list(dict.fromkeys(space["ow_block"] + widths))
            if (d["kh"], d["kw"]) == (1, 1) and not blocks_named(sch, "pad") and (d["oh"] * d["ow"]) % ctx.lanes == 0:
                # unpadded 1x1: whole vectors along the flattened image (``_dense_pixels``; ow_block unused)
                space["vector_axis"].append("pixels")
        return space

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """See module docstring."""
        d = _conv_dims(sch, ctx)
        inline_except_anchor(sch, ctx.anchor_block, keep_pad=not knobs["inline_pad"])
        conv = sch.get_sblock(ctx.anchor_block)
        out = _output_block(sch, ctx, conv)
        if out is None:
            return GenericX86().apply(sch, ctx, GenericX86().defaults(sch, ctx))
        if _is_depthwise(d):
            self._depthwise(sch, ctx, conv, out, knobs)
        elif knobs.get("vector_axis", "oc") == "pixels":
            self._dense_pixels(sch, ctx, conv, out, knobs, d["ow"])
        elif knobs.get("vector_axis", "oc") == "width":
            self._dense_rows(sch, conv, out, knobs)
        else:
            self._dense(sch, ctx, conv, out, knobs)
        if not knobs["inline_pad"]:
            _schedule_pad(sch, ctx)

    def _dense(self, sch: Schedule, ctx: ScheduleContext, conv: Any, out: Any, knobs: dict[str, Any]) -> None:
        ocb, owb = knobs["oc_block"], knobs["ow_block"]
        w_idx = _param_index(sch, conv, 1)
        # OIHW -> (O/ocb, ocb, I, H, W) -> [O/ocb, I, H, W, ocb]
        rewrite = SplitAxisRewrite(0, ocb, (0, 2, 3, 4, 1))
        if w_idx is not None and w_idx in ctx.const_params:
            try:
                sch.transform_layout(conv, ("read", 1), rewrite.as_func())
                ctx.layout_rewrites[w_idx] = rewrite
            except ScheduleError:
                pass
        elif w_idx is not None:
            # run-time weights (training): pack them on every call, O(weights) against
            # O(weights * OH * OW) for the convolution, so weight-vector loads stay contiguous
            packer = sch.cache_read(conv, 1, "global")
            sch.transform_layout(conv, ("read", 1), rewrite.as_func())
            p_loops = sch.get_loops(packer)
            sch.parallel(p_loops[0])
        oci, owi = _tile_output(sch, conv, out, ocb, owb, rows_inner=False)
        sch.transform_layout(conv, ("write", 0), lambda b, c, h, w: (b, c // ocb, h, w, c % ocb))
        keep_in_registers(sch, conv)  # the tile's accumulators: registers once fully unrolled
        sch.unroll(owi)
        _tile_reduction(sch, conv, vector_oc=True)
        sch.vectorize(oci)

    def _dense_rows(self, sch: Schedule, conv: Any, out: Any, knobs: dict[str, Any]) -> None:
        """Vectorised along the output row: per (input channel, ky, kx) one vector load of
        ``ow_block`` inputs (contiguous at stride 1), ``oc_block`` weight broadcasts and FMAs into
        ``oc_block`` row accumulators."""
        oci, owi = _tile_output(sch, conv, out, knobs["oc_block"], knobs["ow_block"], rows_inner=True)
        keep_in_registers(sch, conv)
        _tile_reduction(sch, conv, vector_oc=False)
        sch.unroll(oci)
        sch.vectorize(owi)

    def _dense_pixels(self, sch: Schedule, ctx: ScheduleContext, conv: Any, out: Any, knobs: dict[str, Any],
                      width: int) -> None:
        """A 1x1, stride-1 convolution over the flattened image (rows of ``width`` pixels): the
        accumulator of each of the tile's ``oc_block`` channels is one whole vector of ``lanes``
        consecutive pixels (rows need not be a multiple of the vector: 28 columns are 1.75 vectors,
        784 pixels 49)."""
        sch.transform_layout(conv, ("write", 0), lambda n, c, h, w: (n, c, h * width + w))
        # the block's own iterators over the flat pixel index, so its write region is one variable
        sch.transform_block_layout(conv, lambda n, c, h, w, rc, ry, rx: (n, c, h * width + w, rc, ry, rx))
        sch.transform_block_layout(out, lambda n, c, h, w: (n, c, h * width + w))
        n, oc, pix = sch.get_loops(out)
        oco, oci = sch.split(oc, [None, knobs["oc_block"]])
        po, pi = sch.split(pix, [None, ctx.lanes])
        sch.reorder(n, oco, po, oci, pi)
        task = sch.fuse(n, oco, po)
        sch.parallel(task)
        sch.compute_at(conv, task, preserve_unit_loops=True)
        keep_in_registers(sch, conv)
        c_oc, c_pix, rc, ry, rx = sch.get_loops(conv)[-5:]
        sch.reorder(rc, ry, rx, c_oc, c_pix)
        sch.unroll(c_oc)
        sch.vectorize(c_pix)
        sch.decompose_reduction(conv, rc)
        sch.unroll(oci)
        sch.vectorize(pi)

    def _depthwise(self, sch: Schedule, ctx: ScheduleContext, conv: Any, out: Any, knobs: dict[str, Any]) -> None:
        owb = knobs["ow_block"]
        n, oc, oh, ow = sch.get_loops(out)
        owo, owi = sch.split(ow, [None, owb])
        sch.parallel(sch.fuse(n, oc, oh))
        sch.compute_at(conv, owo, preserve_unit_loops=True)
        c_oc, c_oh, c_ow, rc, ry, rx = sch.get_loops(conv)[-6:]
        keep_in_registers(sch, conv)
        if knobs["vectorize"]:
            sch.reorder(rc, ry, rx, c_oc, c_oh, c_ow)
            sch.vectorize(c_ow)
            sch.decompose_reduction(conv, rc)
        else:
            # one scalar accumulator per output, the 3x3 window fully unrolled innermost
            sch.reorder(c_oc, c_oh, c_ow, rc, ry, rx)
            sch.unroll(ry)
            sch.unroll(rx)
            sch.decompose_reduction(conv, rc)
        sch.vectorize(owi)


register_template(Conv2dX86())
