"""x86 template for row-wise normalisations: Softmax / LogSoftmax / Hardmax and LayerNormalization
(families ``softmax`` and ``norm``).

Same structure as the generic template (one parallel loop over rows, every reduction of a row
computed under it so the row stays in L1, vectorised output), plus vectorised sum reductions.
The generic template can only vectorise a reduction before it is nested under the row loop, and
``rfactor`` refuses a nested one, so here each sum over a row's innermost axis is first split into
``lanes`` partial sums (``rfactor``: a [rows, lanes] buffer accumulated with vector adds, one
register per row), then everything is nested under the row loop.

Why it matters: softmax's ``sum(exp(x - max))`` carries a ~30-instruction polynomial ``exp``
(``portable/ops/fastmath.py``) per element; scalar, that is ~2 M instructions for BERT's
[4, 128, 128] scores (~0.4 ms on 2 cores), 16 lanes at a time it is 1/16 of that. The row max
is rfactored the same way (Softmax's max starts from the lowest finite float, the identity rfactor
recognises): scalar, it is one ``maxss`` per element in a single dependency chain, 4 cycles
each, which alone took ~50 us of the 0.10 ms that [4, 128, 128] softmax took. Softmax's
``exp(x - max)`` row is kept in L1 by default (``keep_exp``) so ``exp`` runs once per element,
not twice.
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

from ..common import (
    block_name,
    blocks,
    blocks_named,
    inline_all,
    is_reduction,
    loop_extent,
    output_blocks,
    parallel_outer,
    spatial_loop_count,
    vectorize_inner,
)
from ..registry import ScheduleContext, Template, register_template
from .generic import GenericX86, _shared_leading_dims


#: Softmax's ``exp(x - max)`` stage, read twice (row sum, output): the ``keep_exp`` knob
KEPT_STAGES = ("softmax_exp",)


def _rfactor_rows(sch: Schedule, lanes: int) -> list[str]:
    """rfactor every reduction whose innermost loop is a reduction of a multiple of 2 * lanes;
    returns the names of the partial-sum (rf) blocks. A reduction rfactor rejects is left alone."""
    names = []
    for blk in list(blocks(sch)):
        if not is_reduction(sch, blk) or int(sch.get(blk).iter_vars[-1].iter_type) == 0:
            continue
        loops = sch.get_loops(blk)
        ext = loop_extent(sch, loops[-1])
        if ext % lanes or ext < 2 * lanes:
            continue
        name = block_name(sch, blk)
        trial = sch.copy()
        try:
            _rfactor(trial, name, lanes)
        except Exception:  # noqa: BLE001 - rfactor raises internal errors for unsupported reducers
            continue
        names.append(_rfactor(sch, name, lanes))
    return names


def _rfactor(sch: Schedule, name: str, lanes: int) -> str:
    blk = sch.get_sblock(name)
    out_rank = len(sch.get(blk).writes[0].source.shape)
    _, ki = sch.split(sch.get_loops(blk)[-1], [None, lanes])
    rf = sch.rfactor(ki, factor_axis=out_rank)
    return block_name(sch, rf)


def _vectorize_lanes(sch: Schedule, name: str, lanes: int) -> None:
    """Make the rf block's lane loop innermost and vectorise it (the accumulation loop outside).

    After compute_at the block has one loop per iterator, in iterator order; the lane iterator is
    the one indexing the rf buffer's last axis, the accumulation loop is the last one.
    """
    rf = sch.get_sblock(name)
    block = sch.get(rf)
    iters = list(block.iter_vars)
    loops = sch.get_loops(rf)
    lane_var = block.writes[0].region[-1].min
    idx = next((i for i, iv in enumerate(iters) if iv.var.same_as(lane_var)), None)
    if idx is None or len(loops) < len(iters) or int(iters[-1].iter_type) == 0:
        return
    lane_loop = loops[len(loops) - len(iters) + idx]
    if loop_extent(sch, lane_loop) != lanes:
        return
    try:
        sch.reorder(loops[-1], lane_loop)
        sch.vectorize(lane_loop)
    except ScheduleError:
        pass


class RowReduceX86(Template):
    """Generic row schedule with rfactor-vectorised sums (see module docstring)."""

    family = "softmax"

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """Chunks per core of the row loop; whether to vectorise (reductions included); for a
        Softmax, whether its ``exp(x - max)`` row is kept (computed once, read by the sum and the
        output from L1) or recomputed by both."""
        space: dict[str, list[Any]] = {"chunks_per_core": [4, 1, 16], "vectorize": [True, False]}
        if blocks_named(sch, *KEPT_STAGES):
            space["keep_exp"] = [True, False]
        return space

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """See module docstring."""
        keep = [block_name(sch, b) for b in blocks_named(sch, *KEPT_STAGES)] if knobs.get("keep_exp") else []
        inline_all(sch, keep=keep)
        outs = output_blocks(sch)
        if len(outs) != 1:
            return GenericX86().apply(sch, ctx, knobs)
        rf_names = set(_rfactor_rows(sch, ctx.lanes)) if knobs["vectorize"] else set()
        out = outs[0]
        outer = parallel_outer(sch, out, _shared_leading_dims(sch, out), ctx.target.num_cores * knobs["chunks_per_core"])
        others = [b for b in blocks(sch) if block_name(sch, b) != block_name(sch, out)]
        nested = outer is not None
        for blk in reversed(others):
            try:
                if nested:
                    sch.compute_at(blk, outer, preserve_unit_loops=True)
            except ScheduleError:
                nested = False
        for blk in blocks(sch) if knobs["vectorize"] else []:
            name = block_name(sch, blk)
            if name in rf_names:
                _vectorize_lanes(sch, name, ctx.lanes)
            elif not is_reduction(sch, blk):
                try:
                    vectorize_inner(sch, blk, ctx.lanes)
                except ScheduleError:
                    pass
        for blk in blocks(sch):  # whatever could not be nested runs on its own parallel loop
            loops = sch.get_loops(blk)
            if loops and not any(int(sch.get(lp).kind) == 1 for lp in loops):
                try:
                    parallel_outer(sch, blk, spatial_loop_count(sch, blk), 4 * ctx.target.num_cores)
                except ScheduleError:
                    pass
        return None


class NormX86(RowReduceX86):
    """LayerNormalization and friends: the same row schedule."""

    family = "norm"


register_template(RowReduceX86())
register_template(NormX86())
