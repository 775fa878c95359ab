"""x86 templates for the gradient kernels of training graphs (``portable/ops/training.py``).

``conv2d_dgrad`` (ConvDataGrad, dense case): a stride-1 convolution of the zero-dilated, padded
output gradient (stage ``pad_dgrad``) with flipped, in/out-swapped weights (stage ``dgrad_w``).
It is scheduled like the forward ``conv2d`` template (``oc_block x ow_block`` register tiles),
except that the weights are runtime values: ``dgrad_w`` is materialised once per call directly in
the packed ``[C/oc_block, O, KH, KW, oc_block]`` layout, so the weight-vector loads are contiguous.

``conv2d_wgrad`` (ConvWeightGrad, dense case): a GEMM reducing over (batch, output rows, output
columns). x (padded) and dy are transposed to channels-last once per call (stages ``wgrad_xt`` and
``wgrad_dyt``). Each task owns a set of ``c_block x o_block`` tiles (of one kernel tap each) and
walks the reduction in chunks of a few output rows of one image (``wgrad_part``): per chunk, a
tile sums the chunk in registers (one contiguous ``o_block`` load of dy, ``c_block`` broadcasts
of x and ``c_block * o_block / lanes`` FMAs per step) and adds it to the tile in memory, so the
chunk's dy and x rows stay in cache for all the task's tiles instead of being streamed per tile.

Grouped convolutions use the generic schedule.
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule

from ..common import block_name, blocks, divisors, inline_all, inline_except_anchor, loop_extent, output_blocks, parallel_outer
from ..layout import SplitAxisRewrite
from ..registry import ScheduleContext, Template, register_template
from .conv import Conv2dX86, _output_block, _schedule_pad
from .generic import GenericX86
from .registers import keep_in_registers


def _has_block(sch: Schedule, name: str) -> bool:
    return any(block_name(sch, b) == name for b in blocks(sch))


def _generic(sch: Schedule, ctx: ScheduleContext) -> None:
    GenericX86().apply(sch, ctx, GenericX86().defaults(sch, ctx))


def _read_index(sch: Schedule, blk: Any, producer: str) -> int | None:
    """Index of the read of ``blk`` whose buffer ``producer`` writes."""
    buf = sch.get(sch.get_sblock(producer)).writes[0].source
    return next((i for i, r in enumerate(sch.get(blk).reads) if r.source.same_as(buf)), None)


class ConvDgradX86(Conv2dX86):
    """Data gradient of a dense convolution: the conv2d register tiling with weights packed per call."""

    family = "conv2d_dgrad"
    target_family = "x86"
    row_vectors = False  # apply() always tiles over output channels

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """As the forward conv (oc_block, ow_block, inline_pad); the generic space for grouped ones."""
        if not _has_block(sch, "dgrad_w"):
            return GenericX86().space(sch, ctx)
        return super().space(sch, ctx)

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """See module docstring."""
        if not _has_block(sch, "dgrad_w"):
            return GenericX86().apply(sch, ctx, knobs)
        inline_except_anchor(sch, ctx.anchor_block, keep_pad=not knobs["inline_pad"], also=("dgrad_w",))
        conv = sch.get_sblock(ctx.anchor_block)
        out = _output_block(sch, ctx, conv)
        w_read = _read_index(sch, conv, "dgrad_w")
        if out is None or w_read is None:
            return _generic(sch, ctx)
        ocb = knobs["oc_block"]
        sch.transform_layout(conv, ("read", w_read), SplitAxisRewrite(0, ocb, (0, 2, 3, 4, 1)).as_func())
        self._dense(sch, ctx, conv, out, knobs)
        wblk = sch.get_sblock("dgrad_w")
        parallel_outer(sch, wblk, 2, ctx.target.num_cores * 4)
        if not knobs["inline_pad"]:
            _schedule_pad(sch, ctx)


def _o_blocks(oc: int, lanes: int) -> list[int]:
    mult = [lanes * m for m in (2, 1) if oc % (lanes * m) == 0]
    if mult:
        return mult
    return sorted([d for d in divisors(oc, lanes) if d >= 4], reverse=True)[:2] or [max(divisors(oc, lanes))]


def _split_tasks(sch: Schedule, loops: list, tasks: int) -> tuple[list, list]:
    """Split the tile loops into outer ones (about ``tasks`` iterations in all) and the rest."""
    par, rest, total = [], [], 1
    for i, lp in enumerate(loops):
        ext = loop_extent(sch, lp)
        if total * ext <= tasks:
            par.append(lp)
            total *= ext
            continue
        d = max(divisors(ext, max(1, tasks // total)))
        if d > 1:
            outer, inner = sch.split(lp, [d, None])
            par.append(outer)
            rest.append(inner)
        else:
            rest.append(lp)
        rest += loops[i + 1:]
        break
    if not par:
        par, rest = rest[:1], rest[1:]
    if not rest:  # keep one loop under the chunk loops: split the innermost parallel one
        ext = loop_extent(sch, par[-1])
        par[-1], inner = sch.split(par[-1], [None, 1]) if ext == 1 else sch.split(par[-1], [ext, 1])
        rest = [inner]
    return par, rest


class ConvWgradX86(Template):
    """Weight gradient of a dense convolution: register-tiled channels-last GEMM per kernel tap."""

    family = "conv2d_wgrad"
    target_family = "x86"

    @staticmethod
    def _dims(sch: Schedule) -> list[int]:
        """(N/imgs, OH/rows, kh, kw, C, O, imgs, rows, OW) extents of the ``wgrad_part`` stage."""
        return [loop_extent(sch, lp) for lp in sch.get_loops(sch.get_sblock("wgrad_part"))]

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """o_block (vector of output channels), c_block (input channels per tile), unroll of the column loop,
        tasks per core (how the tiles are split over cores)."""
        if not _has_block(sch, "wgrad_part"):
            return GenericX86().space(sch, ctx)
        c, o, ow = self._dims(sch)[4], self._dims(sch)[5], self._dims(sch)[-1]
        limit = 12 if ctx.lanes >= 16 else 6
        cbs = sorted(divisors(c, limit), reverse=True)[:3]
        return {"o_block": _o_blocks(o, ctx.lanes), "c_block": cbs,
                "unroll_j": [u for u in (1, 2, 4) if ow % u == 0], "tasks_per_core": [1, 2, 4]}

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """See module docstring."""
        if not _has_block(sch, "wgrad_part"):
            return GenericX86().apply(sch, ctx, knobs)
        inline_all(sch, keep={ctx.anchor_block, "wgrad_xt", "wgrad_dyt"})
        acc, part = sch.get_sblock(ctx.anchor_block), sch.get_sblock("wgrad_part")
        ob, cb = knobs["o_block"], knobs["c_block"]
        y, z, c, o, rn, ri = sch.get_loops(acc)
        co, ci = sch.split(c, [None, cb])
        oo, oi = sch.split(o, [None, ob])
        par, rest = _split_tasks(sch, [co, oo, y, z], ctx.target.num_cores * knobs["tasks_per_core"])
        sch.reorder(*par, rn, ri, *rest, ci, oi)
        tp = sch.fuse(*par) if len(par) > 1 else par[0]
        tr = rest[-1]
        sch.parallel(tp)
        sch.unroll(ci)
        sch.unroll(oi)  # (vectorize refuses a reduction block under its reduction loops; LLVM's SLP does it)
        sch.compute_at(part, tr, preserve_unit_loops=True)
        p_c, p_o, rb, rr, rj = sch.get_loops(part)[-5:]
        sch.reorder(rb, rr, rj, p_c, p_o)
        if knobs["unroll_j"] > 1:
            _, rju = sch.split(rj, [None, knobs["unroll_j"]])
            sch.unroll(rju)
        sch.unroll(p_c)
        sch.vectorize(p_o)
        sch.decompose_reduction(part, rb)
        keep_in_registers(sch, part)  # the tile's accumulators: registers once unrolled
        sch.decompose_reduction(acc, rn)
        for blk in output_blocks(sch):
            parallel_outer(sch, blk, 2, ctx.target.num_cores * 4)
        for name in ("wgrad_xt", "wgrad_dyt"):
            parallel_outer(sch, sch.get_sblock(name), 2, ctx.target.num_cores * 4)


register_template(ConvDgradX86())
register_template(ConvWgradX86())
