"""x86 template for MatMul / Gemm / batched matmul (with any fused elementwise epilogue).

Cache-blocked GEMM in the style of GotoBLAS/BLIS, written as a TIR schedule:

``parallel (batch, row block mb, column block nb)``: one task per ``mb x nb`` output block, several
tasks per core so an uneven split costs little. Inside a task::

    for ko in K / kc:                     # K slice: its B block (kc x nb, packed) stays in L2
        pack B[ko*kc : +kc, block] -> [nb/nr, kc, nr]     (run-time B only; a constant B is
                                                          packed [N/nr, K, nr] at compile time)
        for jo in nb / nr:                # one B micro-panel, kc x nr: stays in L1 across io
            for io in mb / mr:            # one A row strip, mr x kc: from L1/L2
                for ki in kc:             # accumulators: mr x nr/lanes vector registers
                    C[mr x nr] += A[mr, ki] (broadcast) * Bp[jo, ki, 0:nr]

The ``mb x nb`` block of C is a per-task buffer (it is also where the fused epilogue reads from),
so between K slices the tile is re-loaded from L1/L2, once per ``kc`` FMAs per register;
within a slice LLVM keeps it in registers (the k loop only reads A and B, which the block's
buffers provably do not alias).

Why these defaults (Ice Lake server: 32 zmm registers, 2 FMA ports = 2 x 16 fp32 FMAs per cycle,
4-cycle FMA latency, 2 load ports, L1D 48 KiB, L2 1.25 MiB per core):

* ``mr x nr``: each k step does ``mr * nr/16`` FMAs for ``nr/16`` vector loads of B plus ``mr``
  broadcasts of A, and the two load ports, not the FMA ports, are what a tile runs out of first.
  A C micro-kernel of each shape on L1-resident panels (one core, 176 GFLOPS FMA peak measured with
  12 independent FMA chains) ran: 8 x 32 (10 loads per 16 FMAs) 83 %, 12 x 32 (14 per 24) 91 %,
  4 x 64 (8 per 16) 97 %, 8 x 48 (11 per 24) 96 %, 6 x 64 (10 per 24) 98 %, 16 x 16 38 %. So on
  AVX-512 the default is four vectors wide with as many rows as fit 24 accumulators (6, else 4;
  the rest of the 32 zmm hold B and the broadcast). At 1024^3 on 2 cores this took the kernel from
  234 to 259 GFLOPS (8 x 32 -> 4 x 64, same run). AVX2's 16 ymm keep the two-vector tile (6 x 16 where 6 divides M).
* ``kc``: the B micro-panel ``kc * nr * 4`` bytes must stay in L1 (48 KiB) while the ``mb / mr``
  row strips of A go by: at most 32 KiB, so kc = 128 for nr = 64 and 256 for nr = 32. Without
  the K slice (the old template) B came from L2 every k step (128 B per 16 FMAs = 16 B/cycle at
  full FMA rate, the L2's practical bandwidth), which capped it at ~40 % of peak. K <= 512 is
  not sliced (the re-load of C then costs more than it saves).
* ``mb, nb``: A block ``mb * kc * 4`` + B block ``kc * nb * 4`` + C block ``mb * nb * 4`` bytes stay
  in the 1.25 MiB L2 (128 x 256 at kc = 256: 128 + 256 + 128 KiB); the block is shrunk until there
  are >= 4 tasks per core.
* a run-time B is copied into ``nr``-wide panels, so the k loop streams contiguous memory instead
  of one row (one 4 KiB-aliasing L1 set) per k step. ``b_panels``: "kernel" packs all of B once
  per call in its own parallel loop (each element copied once, GotoBLAS-style), "task" packs each
  task's block per K slice (copied once per row block, M/mb times; but hot in L2 when used). At
  1024^3 with mb = 64 (16 row blocks): 11.3 vs 12.8 ms, same run.
* ``unroll_k`` 4 by default: 1024^3 took 11.6-12.2 ms at 4 against 12.7-12.8 ms at 1 (same
  runs): the loop's add/compare/branch come once per 4 k steps instead of every 16 FMAs.
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError
from tvm.tirx.analysis import undefined_vars

from ..common import (
    block_name,
    divisors,
    inline_all,
    loop_extent,
    output_blocks,
    parallel_outer,
    vectorize_inner,
)
from ..layout import SplitAxisRewrite
from ..registry import ScheduleContext, Template, register_template
from .generic import GenericX86

MAX_ACCUMULATORS = 24  # of 32 zmm on AVX-512; half of that on AVX2's 16 ymm
TASKS_PER_CORE = 4
L1_B_PANEL_BYTES = 32 * 1024  # of a 48 KiB L1D (Ice Lake; 32 KiB on Zen 3 / Skylake: kc is a knob)


def _nr_candidates(n: int, lanes: int) -> list[int]:
    """Tile widths: the preferred one first, then its divisors that are still whole vectors."""
    prefs = (4, 3, 2, 1) if lanes >= 16 else (2, 1, 3, 4)
    mult = [lanes * m for m in prefs if n % (lanes * m) == 0]
    if mult:
        first = mult[0]
        return [first] + [c for c in (lanes * m for m in (1, 2, 4)) if c != first and first % c == 0]
    half = [w for w in (lanes // 2, lanes // 4) if w >= 4 and n % w == 0]
    if half:
        return half
    small = sorted((d for d in divisors(n, 2 * lanes) if d > 1), reverse=True)
    return small[:2] or [1]


def _mr_candidates(m: int, nr: int, lanes: int) -> list[int]:
    """Tile heights dividing M, largest that keeps mr * nr / lanes <= MAX_ACCUMULATORS first."""
    budget = MAX_ACCUMULATORS if lanes >= 16 else MAX_ACCUMULATORS // 2
    vecs = max(1, nr // max(lanes, 1))
    fits = [r for r in (12, 8, 6, 4, 3, 2, 1) if m % r == 0 and r * vecs <= budget and r <= m]
    first = fits[0] if fits else 1
    # two more heights for the other widths of the space (``_fit_block`` fits mb to any of them)
    return [first] + [r for r in (8, 4, 2, 1) if r != first and m % r == 0][:2]


def _fit_kc(k: int, request: int) -> int:
    """The K slice used for a requested one: the largest divisor of K not above it, or the whole of
    K when that is short (<= request) or when no divisor comes within half of the request."""
    if k <= request:
        return k
    best = max(divisors(k, request))
    return best if 2 * best >= request else k


def _fit_block(extent: int, unit: int, request: int) -> int:
    """The task block used for a requested one: the largest multiple of ``unit`` dividing ``extent``
    and not above the request (at least ``unit``, which divides ``extent``)."""
    fits = [d for d in divisors(extent, max(request, unit)) if d % unit == 0]
    return max(fits) if fits else unit


def _block_candidates(extent: int, unit: int, cap: int) -> list[int]:
    """Multiples of ``unit`` dividing ``extent``, largest (<= cap) first."""
    mult = [d for d in divisors(extent) if d % unit == 0]
    if not mult:
        return [extent]
    return sorted((d for d in mult if d <= cap), reverse=True) or [min(mult)]


def _default_blocks(batch: int, m: int, n: int, mbs: list[int], nbs: list[int], cores: int) -> tuple[int, int]:
    """Largest (mb, nb) from the candidates giving >= TASKS_PER_CORE tasks per core (else the smallest)."""
    want = TASKS_PER_CORE * cores
    mi, ni = 0, 0
    while batch * (m // mbs[mi]) * (n // nbs[ni]) < want:
        # shrink whichever block is relatively larger (keep blocks square-ish in bytes)
        can_m, can_n = mi + 1 < len(mbs), ni + 1 < len(nbs)
        if not (can_m or can_n):
            break
        if can_n and (not can_m or nbs[ni] >= 2 * mbs[mi]):
            ni += 1
        else:
            mi += 1
    return mbs[mi], nbs[ni]


class MatmulX86(Template):
    """Cache-blocked, register-tiled matmul with packed B (see module docstring)."""

    family = "matmul"
    target_family = "x86"

    def _dims(self, sch: Schedule, ctx: ScheduleContext) -> tuple[int, int, int, int]:
        """(batch, M, N, K) of the anchor block."""
        loops = sch.get_loops(sch.get_sblock(ctx.anchor_block))
        batch = 1
        for lp in loops[:-3]:
            batch *= loop_extent(sch, lp)
        return batch, loop_extent(sch, loops[-3]), loop_extent(sch, loops[-2]), loop_extent(sch, loops[-1])

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """Register tile (mr, nr), K slice (kc), task block (mb, nb), k unroll and B packing.

        kc, mb and nb are requests (see ``_fit_kc`` / ``_fit_block``): after the shape's default
        they list the same values for every shape, so a tuned record transfers to nearby shapes.
        """
        batch, m, n, k = self._dims(sch, ctx)
        nrs = _nr_candidates(n, ctx.lanes)
        mrs = _mr_candidates(m, nrs[0], ctx.lanes)
        mb, nb = _default_blocks(batch, m, n, _block_candidates(m, mrs[0], 128),
                                 _block_candidates(n, nrs[0], 256), ctx.target.num_cores)
        kc = max(64, min(256, L1_B_PANEL_BYTES // (4 * nrs[0]))) if k > 512 else 512

        def with_default(first: int, rest: tuple[int, ...]) -> list[int]:
            return [first] + [v for v in rest if v != first]

        # a run-time B read by several row blocks is packed once for the whole call (GotoBLAS);
        # read by one row block only, it is packed per task, right before use (hot in L2)
        b_panels = ["kernel", "task"] if m > mb else ["task", "kernel"]
        return {"mr": mrs, "nr": nrs, "kc": with_default(kc, (256, 512, 128)),
                "mb": with_default(mb, (32, 64, 128)), "nb": with_default(nb, (64, 128, 256)),
                "unroll_k": [4, 2, 1], "pack_b": [True, False], "b_panels": b_panels}

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
        _, m, n, k = self._dims(sch, ctx)
        mr, nr = knobs["mr"], knobs["nr"]
        kc = _fit_kc(k, knobs["kc"])
        mb, nb = _fit_block(m, mr, knobs["mb"]), _fit_block(n, nr, knobs["nb"])
        packed_const = knobs["pack_b"] and self._pack_const_b(sch, c, ctx, nr)
        # task blocks over the output (epilogue) nest; the product is computed per block
        *batch, i, j = o_loops
        ib, i_in = sch.split(i, [None, mb])
        jb, j_in = sch.split(j, [None, nb])
        sch.reorder(*batch, ib, jb, i_in, j_in)
        task = sch.fuse(*batch, ib, jb)
        sch.parallel(task)
        vectorize_inner(sch, out, ctx.lanes)
        sch.compute_at(c, task, preserve_unit_loops=True)
        ci, cj, ck = sch.get_loops(c)[-3:]
        io, ii = sch.split(ci, [None, mr])
        jo, ji = sch.split(cj, [None, nr])
        ko, ki = sch.split(ck, [None, kc])
        sch.reorder(ko, jo, io, ki, ii, ji)
        if knobs["pack_b"] and not packed_const:
            self._pack_runtime_b(sch, c, ko if knobs["b_panels"] == "task" else None, ctx, nr)
        if knobs["unroll_k"] > 1 and kc % knobs["unroll_k"] == 0:
            ki, kiu = sch.split(ki, [None, knobs["unroll_k"]])
            sch.unroll(kiu)
        sch.unroll(ii)
        sch.vectorize(ji)
        init = sch.decompose_reduction(c, ko)
        vectorize_inner(sch, init, ctx.lanes)

    def _pack_const_b(self, sch: Schedule, c: Any, ctx: ScheduleContext, nr: int) -> bool:
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

    def _pack_runtime_b(self, sch: Schedule, c: Any, ko: Any | None, ctx: ScheduleContext, nr: int) -> None:
        """Copy B into ``nr``-column panels: with ``ko``, the task's B block of each K slice into a
        per-task [nb/nr, kc, nr] buffer; with None, the whole of B into [N/nr, K, nr] once per call,
        before the tasks (its own parallel loop), so each element is copied once instead of once
        per row block (1024^3: 4 MiB copied instead of 32 MiB).

        Works on B's own buffer axes, so a transpose inlined into the read (attention's K^T) is
        packed too: the axis indexed by the column variable is split by ``nr`` and moved last.
        """
        axes = self._b_axes(sch, c)
        if axes is None:
            return
        j_axis, k_axis = axes
        panel = sch.cache_read(c, 1, "global")
        if ko is not None:
            sch.compute_at(panel, ko, preserve_unit_loops=True)
        shape = [int(d) for d in sch.get(panel).writes[0].source.shape]
        if shape[j_axis] % nr == 0:
            rewrite = SplitAxisRewrite(j_axis, nr, _panel_perm(len(shape), j_axis, k_axis))
            try:
                sch.transform_layout(panel, ("write", 0), rewrite.as_func())
            except ScheduleError:
                pass
        if j_axis == len(shape) - 1:
            vectorize_inner(sch, panel, ctx.lanes)
        if ko is None:
            parallel_outer(sch, panel, len(sch.get_loops(panel)) - 1, TASKS_PER_CORE * ctx.target.num_cores)

    @staticmethod
    def _b_axes(sch: Schedule, c: Any) -> tuple[int, int] | None:
        """(axis indexed by the column variable j, axis indexed by k) of B's buffer, if each of
        them depends on exactly one of j, k and no other axis depends on either."""
        block = sch.get(c)
        if len(block.reads) < 2:
            return None
        j_var, k_var = block.iter_vars[-2].var, block.iter_vars[-1].var
        j_axis = k_axis = None
        for axis, rng in enumerate(block.reads[1].region):
            if int(rng.extent) != 1:
                return None
            used = undefined_vars(rng.min)
            has_j = any(v.same_as(j_var) for v in used)
            has_k = any(v.same_as(k_var) for v in used)
            if has_j and has_k or (has_j and j_axis is not None) or (has_k and k_axis is not None):
                return None
            if has_j:
                j_axis = axis
            elif has_k:
                k_axis = axis
        if j_axis is None or k_axis is None:
            return None
        return j_axis, k_axis

    @staticmethod
    def _b_transposed(sch: Schedule, c: Any) -> bool:
        """True if B is indexed [..., j, k] (Gemm transB=1)."""
        block = sch.get(c)
        region = block.reads[1].region
        k_var = block.iter_vars[-1].var
        first = region[-2].min
        return not (first.same_as(k_var) or str(first) == str(k_var))


def _panel_perm(rank: int, j_axis: int, k_axis: int) -> tuple[int, ...]:
    """Permutation of B's axes after splitting ``j_axis`` into (j // nr, j % nr) that keeps the other
    axes in order and ends with (j // nr, k, j % nr)."""
    jo, jr = j_axis, j_axis + 1
    kk = k_axis if k_axis < j_axis else k_axis + 1
    return (*(a for a in range(rank + 1) if a not in (jo, jr, kk)), jo, kk, jr)


register_template(MatmulX86())
