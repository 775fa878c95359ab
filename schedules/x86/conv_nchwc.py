"""x86 templates for channel-blocked (NCHWc) convolutions and pools, with fused epilogues.

Layout (see ``portable/ops/blocked.py``): activations ``[N, C/cb, H, W, cb]`` with ``cb`` = fp32
lanes (16 on AVX-512, 8 on AVX2), so one output vector is ``cb`` channels of one pixel.

Dense convolution: each task computes an ``oc_blocks x ow_block`` tile of output vectors for one
output row, keeping all of them in registers through the whole reduction over (input-channel
blocks, ky, kx, input lane). One step loads ``oc_blocks`` weight vectors (contiguous: the packed
weight ends in ``[cb_in, cb_out]``), broadcasts ``ow_block`` input scalars (folded into the FMA as
``{1toN}`` memory operands) and issues ``oc_blocks * ow_block`` FMAs. The accumulators must fit the
register file with the weight vectors beside them: 32 zmm on AVX-512 -> ``oc_blocks * ow_block <=
28``; 16 ymm on AVX2 -> ``<= 12``. Ice Lake issues 2 FMAs and 2 loads per cycle, so with
``ow_block >= 4`` and ``oc_blocks = 2`` the loads (``2 + ow_block`` per ``2 * ow_block`` FMAs) never
limit. Stride and kernel size only change which scalars are broadcast: strided layers run at the
same rate (no gathers), unlike NCHW. The weight slab of one tile (``oc_blocks * IC * KH * KW * cb``
floats: 576 KiB for 512 channels 3x3, 2 blocks) streams from L2 (1.25 MiB/core). Rows x channel
groups are spread over the cores, rows first where the input outweighs the weights (``task_order``).

``ic_chunk`` (0 = off) restructures that for large weight slabs: the task's accumulators (its rows
x all columns x oc blocks, a few KiB) move to an L1 buffer, and the reduction over input-channel
blocks is split into chunks of ``ic_chunk`` blocks, each swept over every row and column tile of
the task before the next, so a chunk's weights (4 oc blocks x 1 ic block x 3x3 x 16 x 16 floats =
36 KiB) are read from L1 ``rows x column tiles`` times instead of streaming from L2/L3 once per
tile. The accumulators are reloaded once per chunk (16 FMAs per loaded vector per input lane at
cb = 16). Measured (2 threads, kernel alone): ResNet-18 layer4 3x3 512 ch 7x7: 4x7 tile 1.48 ms
-> 1.22 ms with ic_chunk 1 and all 7 rows per task; layer2 3x3/2 64->128: 0.76 -> 0.57 ms (2x14,
chunk 1, 28 rows). A 1x1/2 layer (128->256, 14x14) gained nothing (0.081 -> 0.081-0.119 ms: few
tasks left). The tuner decides; the default stays off.

Depthwise: one vector of ``cb`` channels per pixel, ``ow_block`` accumulators per row, the window
unrolled; every load is a contiguous vector.

Padding is materialised once per call (a constant fill plus an interior copy, both vectorised) so
the inner loop has no bounds checks, or inlined (``inline_pad``) when the input is small.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tvm.s_tir import Schedule

from ..common import divisors, inline_except_anchor, loop_extent
from ..registry import ScheduleContext, Template, register_template
from .conv import _output_block, _schedule_pad
from .registers import keep_in_registers


def _dims(sch: Schedule, ctx: ScheduleContext) -> dict[str, Any]:
    blk = sch.get_sblock(ctx.anchor_block)
    ext = [loop_extent(sch, lp) for lp in sch.get_loops(blk)]
    return {"ob": ext[1], "oh": ext[2], "ow": ext[3], "cb": ext[4], "reduce": ext[5:],
            "depthwise": bool(ctx.anchor_attrs.get("depthwise", 0))}


def _accumulator_budget(ctx: ScheduleContext) -> int:
    """Vector accumulators that fit beside the operands: 28 of 32 zmm, 12 of 16 ymm."""
    return 28 if ctx.lanes >= 16 else 12


def _tiles(ob: int, ow: int, budget: int) -> list[str]:
    """Register tiles "<oc blocks>x<columns>" dividing the output, fullest register file first.

    Measured on AVX-512 (ResNet-18 layer1, 56 columns): 4x7 187 GFLOPS, 2x8 181, 2x14 172, 1x14 114:
    more oc blocks share each broadcast. (4x7 needs 28 accumulators + 4 weights + 1 broadcast = 33
    registers: LLVM keeps one accumulator on the stack, a load and a store per 28 FMAs, and it
    still measured best.)
    """
    tiles = []
    for m in (4, 3, 2, 1):
        if ob % m:
            continue
        cols = [b for b in divisors(ow, budget // m) if b >= 2 or ow == 1]
        if not cols or max(cols) < 4:  # a prime width (109 in ZFNet): tiles with a partial last one
            cols += [b for b in (8, 7, 4) if b <= budget // m and b < ow and ow % b]
        tiles += [(m, b) for b in cols]
    tiles.sort(key=lambda t: (-min(t[0] * t[1], budget), -t[0]))
    return [f"{m}x{b}" for m, b in tiles[:8]]


def _rows_per_task(oh: int, groups: int, cores: int) -> list[int]:
    """1, and the most output rows per task (at most 28) that still leave every core two tasks
    with the fewest oc-block ``groups`` any tile makes. Two tasks in all measured fastest on a quiet
    machine (ResNet-18 layer2 3x3/2, 28 rows per task: 0.52-0.61 ms) but took 1.44 ms in a run where
    another process held a core for a while: nothing was left to balance the load."""
    fits = [r for r in divisors(oh, 28) if r > 1 and groups * (oh // r) >= 2 * cores]
    return [1] + fits[-1:]


def _rows_first(sch: Schedule, ctx: ScheduleContext) -> bool:
    """Whether tasks should split the output rows before the oc-block groups (``task_order``).

    Splitting rows, each core reads its share of the input rows and all the weights; splitting oc
    blocks, the whole input and its share of the weights. With two cores the first moves less when
    the input is the larger of the two, and it also matches the row split of the NCHW -> NCHWc
    conversion in front (each core then reads rows it just wrote into its own L2). Measured on
    ResNet-18 layer2 3x3/2 (861 KiB padded input, 295 KiB weights; 2 threads, whole one-layer model
    in alternating blocks, five runs): 0.66-0.81 ms rows first against 0.76-0.88 ms channels first;
    in each run rows first was the faster, by 4-14%.
    """
    blk = sch.get(sch.get_sblock(ctx.anchor_block))
    data, weight = (int(np.prod([int(v) for v in r.source.shape])) for r in blk.reads[:2])
    return data > weight


class Conv2dNCHWcX86(Template):
    """Blocked direct convolution: register tile of oc blocks x output columns."""

    family = "conv2d_nchwc"
    target_family = "x86"
    knobs_before_records = {"task_order": "channels"}

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """tile ("<oc blocks>x<columns>"), rows per task, reduction order, inline_pad, task order, ic_chunk
        (depthwise: ow_block, inline_pad)."""
        d = _dims(sch, ctx)
        if d["depthwise"]:
            ows = sorted(divisors(d["ow"], 16), key=lambda b: (b < 4, -b))[:4]
            # inline padding: a depthwise layer does 9 FMAs per loaded vector, so writing and re-reading
            # a padded copy of its input costs more than the bounds checks (measured 2.5x on 112x112x96)
            return {"ow_block": ows, "inline_pad": [True, False]}
        tiles = _tiles(d["ob"], d["ow"], _accumulator_budget(ctx))
        space = {"tile": tiles, "rows_per_task": _rows_per_task(d["oh"], d["ob"] // max(int(t.split("x")[0]) for t in tiles),
                                                                 ctx.target.num_cores),
                 "reduce_order": ["channels_outer", "window_outer"], "inline_pad": [False, True],
                 "task_order": ["rows", "channels"]}
        if len(d["reduce"]) == 4 and d["reduce"][0] > 1:
            space["ic_chunk"] = [0] + [c for c in (1, 2, 4) if c < d["reduce"][0] and d["reduce"][0] % c == 0]
        return space

    def defaults(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, Any]:
        """The fullest register tile whose weight slab stays within half of L2; rows first when the
        input outweighs the weights (``_rows_first``).

        One task streams ``oc_blocks * IC * KH * KW * cb`` weights per output row; above ~640 KiB
        (half of Ice Lake's 1.25 MiB L2) they come from L3 every row (ResNet-18 layer4: 4x7 139
        GFLOPS, 2x7 205). A plain NCHW input (first layer) has a short reduction, where wider rows win
        (conv1 7x7: 2x14 218 GFLOPS, 4x7 133).
        """
        chosen = super().defaults(sch, ctx)
        if "tile" not in chosen:
            return chosen
        d = _dims(sch, ctx)
        per_block = 4 * ctx.lanes * int(np.prod(d["reduce"]))
        tiles = self.space(sch, ctx)["tile"]
        blocked_input = len(d["reduce"]) == 4
        good = [t for t in tiles if int(t.split("x")[0]) * per_block <= 640 * 1024
                and (blocked_input or int(t.split("x")[0]) <= 2)]
        chosen["tile"] = (good or tiles[-1:])[0]
        chosen["task_order"] = "rows" if _rows_first(sch, ctx) else "channels"
        return chosen

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """See module docstring."""
        d = _dims(sch, ctx)
        inline_except_anchor(sch, ctx.anchor_block, keep_pad=not knobs["inline_pad"])
        conv = sch.get_sblock(ctx.anchor_block)
        out = _output_block(sch, ctx, conv, rank=5)
        if out is None:
            raise ValueError("NCHWc convolution epilogue does not keep the output shape")
        if d["depthwise"]:
            m, owb = 1, knobs["ow_block"]
        else:
            m, owb = (int(v) for v in knobs["tile"].split("x"))
        n, ob, oh, ow, ci = sch.get_loops(out)
        obo, obi = sch.split(ob, [None, m])
        owo, owi = sch.split(ow, [None, owb])
        # rows_per_task > 1: a task sweeps several output rows with the same oc blocks, so their
        # weight slab is re-read from L2 instead of being streamed again by another task
        oho, ohi = sch.split(oh, [None, knobs.get("rows_per_task", 1)])
        task_loops = (oho, obo) if knobs.get("task_order") == "rows" else (obo, oho)
        sch.reorder(n, *task_loops, ohi, owo, obi, owi, ci)
        task = sch.fuse(n, *task_loops)
        sch.parallel(task)
        chunk = 0 if d["depthwise"] else knobs.get("ic_chunk", 0)
        # ic_chunk > 0: the task's accumulators (its rows x all columns) live in an L1 buffer and the
        # reduction over input channel blocks is split into chunks, each swept over every row and
        # column tile of the task, so a chunk's weights (oc_blocks x chunk x KH x KW x cb x cb
        # floats) stay in L1 instead of streaming from L2 once per column tile and row
        sch.compute_at(conv, task if chunk else owo, preserve_unit_loops=True)
        keep_in_registers(sch, conv)  # the tile's accumulators: registers once fully unrolled
        loops = sch.get_loops(conv)
        c_ob, c_oh, c_ow, c_ci = loops[-4 - len(d["reduce"]):-len(d["reduce"])]
        red = loops[-len(d["reduce"]):]
        outer: list[Any] = []
        if chunk:
            rco, rci = sch.split(red[0], [None, chunk])
            c_owo, c_ow = sch.split(c_ow, [None, owb])
            c_oho, c_oh = sch.split(c_oh, [None, 1])
            outer, red = [rco, c_oho, c_owo], [rci, *red[1:]]
        if not d["depthwise"] and knobs["reduce_order"] == "window_outer" and len(red) == 4:
            red = [red[1], red[2], red[0], red[3]]  # ky, kx outside the channel blocks
        # columns outside channel blocks: each broadcast input scalar feeds its oc_blocks FMAs at
        # once and dies, so only the accumulators and the weight vectors stay live
        sch.reorder(*outer, *red, c_oh, c_ow, c_ob, c_ci)
        sch.unroll(c_ob)
        sch.unroll(c_ow)
        sch.vectorize(c_ci)
        if d["depthwise"]:
            for r in red:
                sch.unroll(r)
        sch.decompose_reduction(conv, (outer or red)[0])
        sch.unroll(obi)
        sch.unroll(owi)
        sch.vectorize(ci)
        if not knobs["inline_pad"]:
            _schedule_pad(sch, ctx)


class PoolNCHWcX86(Template):
    """Blocked pools: the window reduction runs on whole channel vectors."""

    family = "pool_nchwc"
    target_family = "x86"

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """ow_block (outputs per task row), inline_pad."""
        d = _dims(sch, ctx)
        return {"ow_block": sorted(divisors(d["ow"], 8), reverse=True)[:3], "inline_pad": [True, False]}

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """Parallel over (n, channel block, row); window loops outside the vector of channels."""
        inline_except_anchor(sch, ctx.anchor_block, keep_pad=not knobs["inline_pad"])
        pool = sch.get_sblock(ctx.anchor_block)
        out = _output_block(sch, ctx, pool, rank=5)
        if out is None:
            raise ValueError("NCHWc pool epilogue does not keep the output shape")
        n, ob, oh, ow, ci = sch.get_loops(out)
        owo, owi = sch.split(ow, [None, knobs["ow_block"]])
        sch.parallel(sch.fuse(n, ob, oh))
        sch.compute_at(pool, owo, preserve_unit_loops=True)
        loops = sch.get_loops(pool)
        c_ow, c_ci, k0, k1 = loops[-4], loops[-3], loops[-2], loops[-1]
        sch.reorder(k0, k1, c_ow, c_ci)
        sch.unroll(c_ow)
        sch.vectorize(c_ci)
        sch.decompose_reduction(pool, k0)
        sch.unroll(owi)
        sch.vectorize(ci)
        if not knobs["inline_pad"]:
            _schedule_pad(sch, ctx)


register_template(Conv2dNCHWcX86())
register_template(PoolNCHWcX86())
