"""x86 template for MatMul / Gemm / batched matmul (with any fused elementwise epilogue).

Register-tiled outer product: each task computes an ``mr x nr`` output tile with the whole K loop
inside it. ``nr`` is a multiple of the SIMD width (16 fp32 lanes on AVX-512, 8 on AVX2) so a tile
row is ``nr / lanes`` vector registers, and ``mr * nr / lanes`` accumulators stay in registers
(x86-64 has 16 ymm / 32 zmm registers: 4 x 32 on AVX-512 is 8 zmm accumulators, leaving room for
the B row and the broadcast A value). Each k step loads one ``nr``-wide row of B and ``mr`` scalars of
A, i.e. ``mr * nr / lanes`` FMAs per ``nr / lanes + mr`` loads. A constant B is re-laid out at compile
time as ``[N / nr, K, nr]`` panels, so the k loop streams one contiguous panel (K * nr * 4 bytes:
128 KiB at K=1024, nr=32, inside L2) instead of striding across rows. Tiles are spread over cores.
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

from ..layout import SplitAxisRewrite
from ..common import block_name, divisors, inline_all, loop_extent, output_blocks, vectorize_inner
from ..registry import ScheduleContext, Template, register_template
from .generic import GenericX86


def _tile_candidates(extent: int, lanes: int) -> list[int]:
    """nr candidates: multiples of the vector width dividing N, else divisors of N up to 2 vectors."""
    # AVX-512: 4 zmm per row x 4 rows = 16 of 32 registers; AVX2: 2 ymm x 4 rows = 8 of 16
    prefs = (4, 2, 1, 3) if lanes >= 16 else (2, 1, 4, 3)
    mult = [lanes * m for m in prefs if extent % (lanes * m) == 0]
    if mult:
        return mult
    half = [w * m for w in (lanes // 2, lanes // 4) for m in (4, 2, 1) if w >= 4 and extent % (w * m) == 0]
    if half:
        return list(dict.fromkeys(half))
    small = [d for d in divisors(extent, 2 * lanes) if d > 1]
    return sorted(small, reverse=True)[:3] or [1]


def _row_candidates(extent: int) -> list[int]:
    prefs = [4, 8, 6, 2, 1, 3, 5, 7]
    return [m for m in prefs if extent % m == 0] or [1]


class MatmulX86(Template):
    """Register-tiled matmul with packed constant B."""

    family = "matmul"
    target_family = "x86"

    def _shape(self, sch: Schedule, ctx: ScheduleContext) -> tuple[int, int, int]:
        blk = sch.get_sblock(ctx.anchor_block)
        loops = sch.get_loops(blk)
        return loop_extent(sch, loops[-3]), loop_extent(sch, loops[-2]), loop_extent(sch, loops[-1])

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """mr (rows per tile), nr (columns per tile), outer order, B packing, unroll."""
        m, n, _ = self._shape(sch, ctx)
        rows = _row_candidates(m) if m > 1 else [1]
        cols = _tile_candidates(n, ctx.lanes)
        if m == 1:
            cols = sorted(cols, key=lambda c: -c)
        return {"mr": rows, "nr": cols, "order": ["ji", "ij"], "pack_b": [True, False], "unroll_k": [1, 2, 4]}

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """See module docstring."""
        inline_all(sch, keep={ctx.anchor_block})
        c = sch.get_sblock(ctx.anchor_block)
        outs = output_blocks(sch)
        c_loops = sch.get_loops(c)
        n_spatial = len(c_loops) - 1
        if len(outs) != 1:
            return GenericX86().apply(sch, ctx, GenericX86().defaults(sch, ctx))
        if block_name(sch, outs[0]) == ctx.anchor_block:
            out = sch.cache_write(c, 0, "global")
        else:
            out = outs[0]
        o_loops = sch.get_loops(out)
        if len(o_loops) != n_spatial or [loop_extent(sch, lp) for lp in o_loops] != [
                loop_extent(sch, lp) for lp in c_loops[:-1]]:
            return GenericX86().apply(sch, ctx, GenericX86().defaults(sch, ctx))
        mr, nr = knobs["mr"], knobs["nr"]
        packed_const = knobs["pack_b"] and self._pack_b(sch, c, ctx, nr)
        *batch, i, j = o_loops
        io, ii = sch.split(i, [None, mr])
        jo, ji = sch.split(j, [None, nr])
        m = loop_extent(sch, io) * mr
        if knobs["pack_b"] and not packed_const and knobs["order"] == "ji" and m > mr:
            # B is computed at run time: copy each [K, nr] panel once per column block (O(K*N) work,
            # against O(M*N*K) for the product), so the k loop streams contiguous memory, not one
            # row (and one TLB page) per k step.
            sch.reorder(*batch, jo, io, ii, ji)
            fused = sch.fuse(*batch, jo)
            sch.parallel(fused)
            sch.compute_at(c, io, preserve_unit_loops=True)
            panel = sch.cache_read(c, 1, "global")
            sch.compute_at(panel, fused, preserve_unit_loops=True)
            vectorize_inner(sch, panel, ctx.lanes)
        else:
            outer = [jo, io] if knobs["order"] == "ji" else [io, jo]
            sch.reorder(*batch, *outer, ii, ji)
            fused = sch.fuse(*batch, *outer)
            sch.parallel(fused)
            sch.compute_at(c, fused, preserve_unit_loops=True)
        ci, cj, ck = sch.get_loops(c)[-3:]
        sch.reorder(ck, ci, cj)
        if knobs["unroll_k"] > 1 and loop_extent(sch, ck) % knobs["unroll_k"] == 0:
            ck, cku = sch.split(ck, [None, knobs["unroll_k"]])
            sch.unroll(cku)
        sch.unroll(ci)
        sch.vectorize(cj)
        sch.decompose_reduction(c, ck)
        sch.set_scope(c, 0, "local")  # the tile's accumulators: registers once fully unrolled
        sch.unroll(ii)
        sch.vectorize(ji)

    def _pack_b(self, sch: Schedule, c: Any, ctx: ScheduleContext, nr: int) -> bool:
        """Re-lay out a constant B operand as [N/nr, K, nr] panels (done once, at compile time)."""
        func = sch.mod["main"]
        reads = sch.get(c).reads
        if len(reads) < 2:
            return False
        buf = reads[1].source
        idx = next((i for i, p in enumerate(func.params) if p.same_as(buf)), None)
        if idx is None or idx not in ctx.const_params or len(buf.shape) != 2:
            return False
        trans_b = self._b_transposed(sch, c)
        n = int(buf.shape[0] if trans_b else buf.shape[1])
        if n % nr:
            return False
        # B[j, k] -> (j//nr, j%nr, k) -> [j//nr, k, nr];  B[k, j] -> (k, j//nr, j%nr) -> [j//nr, k, nr]
        rewrite = SplitAxisRewrite(0, nr, (0, 2, 1)) if trans_b else SplitAxisRewrite(1, nr, (1, 0, 2))
        try:
            sch.transform_layout(c, ("read", 1), rewrite.as_func())
        except ScheduleError:
            return False
        ctx.layout_rewrites[idx] = rewrite
        return True

    @staticmethod
    def _b_transposed(sch: Schedule, c: Any) -> bool:
        """True if B is indexed [j, k] (Gemm transB=1)."""
        block = sch.get(c)
        region = block.reads[1].region
        k_var = block.iter_vars[-1].var
        first = region[0].min
        return not (first.same_as(k_var) or str(first) == str(k_var))


register_template(MatmulX86())
