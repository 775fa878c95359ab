"""x86 schedule for the blocked-to-plain layout conversion (``FromNCHWc``), a 2-D transpose per pixel row.

``[N, C/cb, H, W, cb] -> [N, C, H, W]``: each output vector (``lanes`` consecutive columns of one
channel) takes one float from each of ``lanes`` input vectors (one per column, ``cb`` channels
each). Vectorising the output row alone makes every output vector a gather of ``lanes`` floats
``cb * 4`` bytes apart. Instead, a ``cb x tile`` block (``tile`` columns of one channel block) is
loaded with contiguous vector loads into a local buffer, and the output vectors are written from
it with both loops unrolled; LLVM keeps the buffer in registers and turns the transpose into
shuffles. Measured on Ice Lake (2 threads, kernel alone, 16-column tiles):
[1, 4, 112, 112, 16] -> [1, 64, 112, 112] (ResNet-18 conv1's output) 0.345 ms gathering, 0.180 ms
tiled; 64 channels at 56 x 56 0.081 -> 0.063 ms; 128 at 28 x 28 0.040 either way.

Tile width (``transpose_columns``): the buffer is a register array only if it is a stack array, and
TVM makes one only below 1 KiB (``registers.py``): 16 columns x 16 channels is exactly 1 KiB, so it
was heap scratch from the pool allocator, written and re-read through memory. Below that, powers of
two shuffle best; 7 or 14 columns (vectors LLVM splits into 8 + 4 + 2 lanes) do not. Measured on
Zen 4 (kernel inside one-layer models, 2 threads, median of 4 rounds, ms), columns 16 / 14 / 8 / 7 /
4 / 2: conv1's output (64 ch, 112 x 112) 0.210 / 0.261 / 0.161 / 0.259 / 0.113 / 0.123; 64 ch 56 x 56
0.057 / 0.037 / 0.023 / 0.031 / 0.018 / 0.021; 128 ch 28 x 28 0.030 / 0.021 / 0.012 / 0.019 / 0.012 /
0.014; 256 ch 14 x 14 0.010 / 0.013 / 0.008 / 0.012 / 0.008 / 0.010. The default is 4, then 8 and 2,
where they divide the row; else the widest divisor under 1 KiB. The tuner may pick another.

The other direction (``ToNCHWc``) is left to the generic schedule: the same tiling measured slower
there (64 channels at 56 x 56: 0.065 ms tiled against 0.045 ms). Only its loop order changes
(``rows_first``): the generic schedule parallelises the leading loops, which would give each core
whole channel blocks; rows first, each core writes the rows that a rows-first convolution after it
reads (see ``conv_nchwc._rows_first``). Measured alone, [1, 64, 56, 56] -> [1, 4, 58, 58, 16] with
its zero border (2 threads, both orders in one process, six runs): rows first as fast or faster in
five (0.036 vs 0.041, 0.058 vs 0.071, 0.058 vs 0.072, 0.058 vs 0.074, 0.062 vs 0.062 ms), slower in
one (0.088 vs 0.084 ms).

Also measured and left out: 16 x 16 tiles over the flattened pixels (H x W a multiple of 16, full
vectors where 28 or 56 columns leave partial ones): ``FromNCHWc`` 128 x 28 x 28 0.016 ms either way,
64 x 56 x 56 0.051 tiled by columns against 0.064-0.083 flattened; ``ToNCHWc`` (no border) 0.058
flattened against 0.053 generic. And ``FromNCHWc`` rows first, to read what a rows-first
convolution left in each core's cache: 0.042 ms against 0.029 channels first (ResNet-18 layer2
3x3/2 as a one-layer model, in one process): each core then writes short runs into every
channel plane instead of whole planes.
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule

from ..common import block_name, blocks, divisors
from .registers import STACK_LIMIT_BYTES, TILE_SCOPE

#: names of the conversion stages (``portable/ops/blocked.py``)
STAGE = "from_nchwc"
TO_STAGE = "to_nchwc"


def transposable(sch: Schedule) -> bool:
    """True if the kernel is a lone ``FromNCHWc`` whose channels fill whole blocks."""
    blks = blocks(sch)
    if len(blks) != 1 or not block_name(sch, blks[0]).startswith(STAGE):
        return False
    blk = sch.get(blks[0])
    if len(blk.reads) != 1 or len(blk.reads[0].source.shape) != 5 or len(blk.writes[0].source.shape) != 4:
        return False
    cb = int(blk.reads[0].source.shape[-1])
    return int(blk.writes[0].source.shape[1]) % cb == 0


#: tile widths in the order measured best (module docstring), where they divide the row and fit
PREFERRED_COLUMNS = (4, 8, 2)


def column_tiles(sch: Schedule, lanes: int) -> list[int]:
    """Candidate tile widths (columns dividing the row, at most ``lanes``, ``cb x columns`` fp32
    under 1 KiB): ``PREFERRED_COLUMNS``, else the widest that fits (1 always does)."""
    blk = sch.get(blocks(sch)[0])
    cb = int(blk.reads[0].source.shape[-1])
    width = int(blk.writes[0].source.shape[-1])
    fitting = [c for c in divisors(width, lanes) if cb * c * 4 < STACK_LIMIT_BYTES]
    preferred = [c for c in PREFERRED_COLUMNS if c in fitting]
    return preferred or fitting[-1:]


def schedule_transpose(sch: Schedule, tile: int) -> None:
    """Tile by (channel block, ``tile`` columns); parallel over (n, channel block, row), which has
    ``N x C/cb x H`` iterations: always several per core."""
    y = blocks(sch)[0]
    cb = int(sch.get(y).reads[0].source.shape[-1])
    b, c, i, j = sch.get_loops(y)
    co, ci = sch.split(c, [None, cb])
    jo, ji = sch.split(j, [None, tile])
    sch.reorder(b, co, i, jo, ci, ji)
    sch.parallel(sch.fuse(b, co, i))
    local = sch.cache_read(y, 0, TILE_SCOPE)
    sch.compute_at(local, jo)
    inner = sch.get_loops(local)
    sch.vectorize(inner[-1])  # a column's cb channels: one contiguous vector load
    sch.unroll(inner[-2])
    sch.unroll(ci)
    sch.vectorize(ji)


def rows_first(sch: Schedule) -> None:
    """Put the rows of a lone ``ToNCHWc`` ahead of its channel blocks (``[N, H, C/cb, W, cb]`` loop
    order), so that the generic schedule's parallel loop splits rows."""
    blks = blocks(sch)
    if len(blks) != 1 or not block_name(sch, blks[0]).startswith(TO_STAGE):
        return
    loops = sch.get_loops(blks[0])
    if len(loops) == 5:
        b, co, i, j, ci = loops
        sch.reorder(b, i, co, j, ci)


def knob_space(sch: Schedule, lanes: int) -> dict[str, list[Any]]:
    """``tile_transpose`` and its ``transpose_columns``, offered only where the kernel is a
    transposable conversion."""
    if not transposable(sch):
        return {}
    return {"tile_transpose": [True, False], "transpose_columns": column_tiles(sch, lanes)}
