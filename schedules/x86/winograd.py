"""x86 template for the blocked Winograd convolution (``portable/ops/winograd.py``).

Three parallel phases in one kernel, each streaming whole channel vectors (cb = 16 fp32 lanes on
AVX-512, 8 on AVX2):

1. Input transform, one task per (input channel block, tile): the tile's ``a x a`` patch goes
   through ``B^T . B`` in registers (rows stage kept ``local``, unrolled: every coefficient is a
   compile-time constant, zeros already dropped), written as ``V[e, f, c, tile, :]``.
2. The ``a * a`` matrix products ``M[e, f] = V[e, f] . U[e, f]`` (tiles x in-channels x
   out-channels), one task per (e, f, group of oc blocks). Register tile: ``tiles`` rows x
   ``oc_blocks`` vectors of accumulators; each step broadcasts ``tiles`` V scalars and loads
   ``oc_blocks`` U vectors. Measured on Ice Lake (64 channels, 56x56, m = 4): 7x2 0.50 ms, 7x4
   0.63 ms, 14x2 0.87 ms: 14-16 accumulators leave LLVM room for the broadcasts; 28 spill. One
   task's operands (V[e, f]: tiles x channels; U[e, f]: channels x 2 blocks) are 16-64 KiB, so
   they stay in L1/L2 while the task sweeps its tiles.
3. Output transform per (oc block, row of tiles): ``A^T . A`` in registers, plus the fused
   epilogue (bias, residual add, activation), written straight to the NCHWc output.

``products_per_row`` moves phase 2 into phase 3's tasks: each computes the products of its own row
of tiles and oc block first (see ``defaults`` for where that pays).
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule

from ..common import blocks_named, divisors, inline_except_anchor, loop_extent, output_blocks
from ..registry import ScheduleContext, Template, register_template
from .registers import TILE_SCOPE, keep_in_registers

_STAGES = ("wino_rows", "wino_in", "wino_out_rows")


def _gemm_tiles(tiles: int, oc_blocks: int, budget: int) -> list[str]:
    """Register tiles "<tiles>x<oc blocks>" dividing the product, nearest 14 accumulators first."""
    out = [(t, k) for k in (1, 2, 4) if oc_blocks % k == 0 for t in divisors(tiles, budget // k) if t * k <= budget]
    out.sort(key=lambda tk: (abs(tk[0] * tk[1] - 14), -tk[1]))
    return [f"{t}x{k}" for t, k in out[:6]]


def _register_tile(sch: Schedule, gemm: Any, at: Any) -> None:
    """The products' register tile under loop ``at``: the reduction (input blocks, lanes) outside,
    the tile's tiles x oc blocks unrolled and its output lanes one vector, so each step broadcasts
    one V scalar per tile row and loads one U vector per oc block."""
    sch.compute_at(gemm, at, preserve_unit_loops=True)
    g_t, g_k, g_ko, r_c, r_ci = sch.get_loops(gemm)[-5:]
    sch.reorder(r_c, r_ci, g_t, g_k, g_ko)
    sch.unroll(g_t)
    sch.unroll(g_k)
    sch.vectorize(g_ko)
    sch.decompose_reduction(gemm, r_c)


def _rows_in_registers(sch: Schedule, rows: Any, at: Any) -> None:
    """Compute a transform's row stage per tile under loop ``at``, as a local buffer: its two
    small loops unrolled (constant coefficients) and its channel loop one vector."""
    sch.compute_at(rows, at, preserve_unit_loops=True)
    keep_in_registers(sch, rows)
    first, second, lanes = sch.get_loops(rows)[-3:]
    sch.unroll(first)
    sch.unroll(second)
    sch.vectorize(lanes)


class WinogradNCHWcX86(Template):
    """Blocked Winograd F(m x m, r x r), r = 3, or 2 and 4 (stride 2 by phases): transforms in
    registers, batched products register-tiled."""

    family = "conv2d_winograd_nchwc"
    target_family = "x86"

    knobs_before_records = {"products_per_row": False}

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """gemm_tile: "<tiles>x<oc blocks>" of the batched products' register tile; products_per_row:
        the products of one output task (an oc block's row of tiles) computed inside that task."""
        gemm = sch.get_sblock(ctx.anchor_block)
        _, _, kb, tiles, _ = (loop_extent(sch, lp) for lp in sch.get_loops(gemm)[:5])
        budget = 16 if ctx.lanes >= 16 else 8  # measured: past ~16 zmm accumulators LLVM spills here
        return {"gemm_tile": _gemm_tiles(tiles, kb, budget), "products_per_row": [False, True]}

    def defaults(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, Any]:
        """Products per row only where they reduce over at most 16 input channels (the densely
        packed 7x7 first layer: one block on AVX-512, two on AVX2): there each transformed product
        costs 16 multiply-adds, so writing the whole layer's products (9.8 MB at 224 x 224) and
        reading them back costs more than computing them. Measured on Zen 4 (2 threads, kernels
        timed inside whole models, 8 rounds): ResNet-18's first layer 0.69x the kernel's time,
        Inception v1's 0.85x; their 3x3 layers (4-32 input blocks) 1.06-1.59x, which keep
        whole-layer products."""
        chosen = super().defaults(sch, ctx)
        loops = sch.get_loops(sch.get_sblock(ctx.anchor_block))
        reduction = loop_extent(sch, loops[5]) * loop_extent(sch, loops[6])  # input blocks x lanes
        chosen["products_per_row"] = reduction <= 16
        return chosen

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """See module docstring."""
        inline_except_anchor(sch, ctx.anchor_block, keep_pad=False, also=_STAGES)
        outs = output_blocks(sch)
        if len(outs) != 1 or len(sch.get_loops(outs[0])) != 5:
            raise ValueError("Winograd convolution epilogue does not keep the output shape")
        self._input_transform(sch)
        if knobs.get("products_per_row"):
            task = self._output_transform(sch, outs[0])
            self._products_in_task(sch, ctx, knobs, task)
        else:
            self._products(sch, ctx, knobs)
            self._output_transform(sch, outs[0])

    @staticmethod
    def _input_transform(sch: Schedule) -> None:
        v = blocks_named(sch, "wino_in")[0]
        e, f, c, t, ci = sch.get_loops(v)
        sch.reorder(c, t, e, f, ci)
        sch.parallel(sch.fuse(c, t))
        _rows_in_registers(sch, blocks_named(sch, "wino_rows")[0], sch.get_loops(v)[0])
        sch.unroll(e)
        sch.unroll(f)
        sch.vectorize(ci)

    @staticmethod
    def _products(sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        tile_rows, tile_blocks = (int(v) for v in knobs["gemm_tile"].split("x"))
        gemm = sch.get_sblock(ctx.anchor_block)
        store = sch.cache_write(gemm, 0, TILE_SCOPE)
        e, f, k, t, ko = sch.get_loops(store)
        k_o, k_i = sch.split(k, [None, tile_blocks])
        t_o, t_i = sch.split(t, [None, tile_rows])
        sch.reorder(e, f, k_o, t_o, t_i, k_i, ko)
        sch.parallel(sch.fuse(e, f, k_o))
        _register_tile(sch, gemm, t_o)
        sch.unroll(t_i)
        sch.unroll(k_i)
        sch.vectorize(ko)

    @staticmethod
    def _products_in_task(sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any], task: Any) -> None:
        """The products one output task reads (``a * a`` x its row of tiles x one oc block), computed
        at the start of that task: they stay in L2 instead of going to memory and back, which they
        do when a whole layer's products (ResNet's 7x7 first layer: 49 x 784 tiles x 64 channels,
        9.8 MB) are written before any is transformed back. Register tile: the knob's
        ``tiles x oc blocks`` accumulators, all along the row's tiles (one oc block per task: 7x2
        and 14x1 make the same tile here)."""
        tile_rows, tile_blocks = (int(v) for v in knobs["gemm_tile"].split("x"))
        gemm = sch.get_sblock(ctx.anchor_block)
        store = sch.cache_write(gemm, 0, TILE_SCOPE)
        sch.compute_at(store, task, preserve_unit_loops=True)
        e, f, k, t, ko = sch.get_loops(store)[-5:]
        rows = max(divisors(loop_extent(sch, t), tile_rows * tile_blocks))
        t_o, t_i = sch.split(t, [None, rows])
        sch.reorder(e, f, k, t_o, t_i, ko)
        _register_tile(sch, gemm, t_o)
        sch.unroll(t_i)
        sch.vectorize(ko)

    @staticmethod
    def _output_transform(sch: Schedule, out: Any) -> Any:
        """Parallel over (batch, oc block, row of tiles); returns that task loop."""
        rows = blocks_named(sch, "wino_out_rows")[0]
        m = loop_extent(sch, sch.get_loops(rows)[2])
        n, k, h, w, ko = sch.get_loops(out)
        h_o, h_i = sch.split(h, [None, m])
        w_o, w_i = sch.split(w, [None, m])
        sch.reorder(n, k, h_o, w_o, h_i, w_i, ko)
        task = sch.fuse(n, k, h_o)
        sch.parallel(task)
        _rows_in_registers(sch, rows, w_o)
        sch.unroll(h_i)
        sch.unroll(w_i)
        sch.vectorize(ko)
        return task


register_template(WinogradNCHWcX86())
