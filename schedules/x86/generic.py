"""x86 fallback template for elementwise, injective, pooling and reduction kernels.

Everything injective is inlined into its consumer, so a chain of elementwise ops is one loop
nest reading each input once. The output nest is split over cores (a few chunks per core so an
uneven split costs little) and its innermost loop runs on full SIMD registers. Reductions that
feed the output (softmax's max and sum, a pool's window) are computed under the output's
parallel loop, so their intermediate rows stay in L1.
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

from ..common import (
    block_name,
    blocks,
    inline_all,
    is_reduction,
    output_blocks,
    parallel_outer,
    spatial_loop_count,
    vectorize_inner,
    vectorize_reduction,
)
from ..registry import ScheduleContext, Template, register_template
from . import transpose


class GenericX86(Template):
    """Inline, parallelise the outer loops, vectorise the inner one."""

    family = "generic"
    target_family = "x86"

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """Chunks per core for the parallel loop, and whether to vectorize."""
        return {"chunks_per_core": [4, 1, 16], "vectorize": [True, False]}

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """See module docstring."""
        inline_all(sch)
        min_chunks = ctx.target.num_cores * knobs["chunks_per_core"]
        outs = output_blocks(sch)
        first = outs[0]
        outer = None
        if len(outs) == 1:
            outer = parallel_outer(sch, first, _shared_leading_dims(sch, first), min_chunks)
            others = [b for b in blocks(sch) if block_name(sch, b) != block_name(sch, first)]
            # nest producers under the output's parallel loop; those that cannot be nested are
            # parallelised on their own by the loop below
            for blk in reversed(others):
                if outer is None:
                    break
                try:
                    sch.compute_at(blk, outer, preserve_unit_loops=True)
                except ScheduleError:
                    break
        for blk in blocks(sch):
            if not knobs["vectorize"]:
                break
            try:
                if is_reduction(sch, blk):
                    vectorize_reduction(sch, blk, ctx.lanes)
                else:
                    vectorize_inner(sch, blk, ctx.lanes)
            except ScheduleError:
                pass
        for blk in blocks(sch):
            loops = sch.get_loops(blk)
            if loops and not _has_parallel(sch, loops):
                try:
                    parallel_outer(sch, blk, spatial_loop_count(sch, blk), min_chunks)
                except ScheduleError:
                    pass


def _shared_leading_dims(sch: Schedule, out) -> int:  # type: ignore[no-untyped-def]
    """Leading output dims that every reduction feeding the output also has.

    Fusing further (into a softmax's normalised axis, say) would make each output element
    recompute its row's max and sum once the reductions are computed under that loop.
    """
    n = spatial_loop_count(sch, out)
    out_shape = [int(d) for d in sch.get(out).writes[0].source.shape]
    for blk in blocks(sch):
        if blk is out or not is_reduction(sch, blk) or block_name(sch, blk) == block_name(sch, out):
            continue
        red_shape = [int(d) for d in sch.get(blk).writes[0].source.shape]
        k = 0
        while k < min(len(red_shape), len(out_shape)) and red_shape[k] == out_shape[k]:
            k += 1
        n = min(n, max(1, k))
    return n


def _has_parallel(sch: Schedule, loops: list) -> bool:
    return any(int(sch.get(lp).kind) == 1 for lp in loops)


register_template(GenericX86())


class ElemwiseX86(GenericX86):
    """Elementwise/injective chains: the generic template, except that a lone blocked-to-plain layout
    conversion is scheduled as the tiled transpose it is, and a lone plain-to-blocked one splits rows
    over the cores (``transpose.py``)."""

    family = "elemwise"

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """The generic knobs, plus ``tile_transpose`` for a ``FromNCHWc`` kernel."""
        return {**super().space(sch, ctx), **transpose.knob_space(sch, ctx.lanes)}

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """See the class docstring."""
        if knobs.get("tile_transpose") and transpose.transposable(sch):
            columns = knobs.get("transpose_columns") or transpose.column_tiles(sch, ctx.lanes)[0]
            return transpose.schedule_transpose(sch, columns)
        transpose.rows_first(sch)
        return super().apply(sch, ctx, knobs)


register_template(ElemwiseX86())
