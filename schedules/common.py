"""Schedule helpers shared by templates of every target family."""

from __future__ import annotations

from typing import Iterable

from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError


def blocks(sch: Schedule) -> list:
    """Top-level blocks of the function in program order."""
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def block_name(sch: Schedule, blk) -> str:  # type: ignore[no-untyped-def]
    """Name of a block."""
    return sch.get(blk).name_hint


def blocks_named(sch: Schedule, *prefixes: str) -> list:
    """Top-level blocks whose name starts with one of ``prefixes`` (create_prim_func may append a
    suffix to a stage's name)."""
    return [b for b in blocks(sch) if block_name(sch, b).startswith(prefixes)]


def is_reduction(sch: Schedule, blk) -> bool:  # type: ignore[no-untyped-def]
    """True if the block has a reduction iterator."""
    return any(int(iv.iter_type) != 0 for iv in sch.get(blk).iter_vars)


def output_blocks(sch: Schedule) -> list:
    """Blocks writing a function output."""
    return list(sch.get_output_blocks(sch.get_sblock("root")))


def inline_all(sch: Schedule, keep: Iterable[str] = ()) -> None:
    """compute_inline every block that allows it, except outputs and ``keep``; repeat to a fixpoint."""
    keep = set(keep)
    changed = True
    while changed:
        changed = False
        outs = {block_name(sch, b) for b in output_blocks(sch)}
        for blk in blocks(sch):
            name = block_name(sch, blk)
            if name in keep or name in outs or is_reduction(sch, blk):
                continue
            try:
                sch.compute_inline(blk)
                changed = True
                break
            except ScheduleError:
                continue


def inline_except_anchor(sch: Schedule, anchor: str, keep_pad: bool, also: Iterable[str] = ()) -> None:
    """Inline every stage but the anchor, the stages named with a prefix in ``also`` and, with
    ``keep_pad``, the materialised ``pad*`` stages."""
    prefixes = (*also, "pad") if keep_pad else tuple(also)
    keep = {anchor} | {block_name(sch, b) for b in blocks_named(sch, *prefixes)}
    inline_all(sch, keep=keep)


def loop_extent(sch: Schedule, loop) -> int:  # type: ignore[no-untyped-def]
    """Static extent of a loop."""
    return int(sch.get(loop).extent)


def spatial_loop_count(sch: Schedule, blk) -> int:  # type: ignore[no-untyped-def]
    """Number of leading data-parallel iterators of a block (its outer spatial loops)."""
    n = 0
    for iv in sch.get(blk).iter_vars:
        if int(iv.iter_type) != 0:
            break
        n += 1
    return n


def parallel_outer(sch: Schedule, blk, num_spatial: int, min_chunks: int) -> object | None:  # type: ignore[no-untyped-def]
    """Fuse leading spatial loops until there are ``min_chunks`` iterations and mark them parallel."""
    loops = sch.get_loops(blk)[:num_spatial]
    if not loops:
        return None
    take, total = 0, 1
    for lp in loops:
        take += 1
        total *= loop_extent(sch, lp)
        if total >= min_chunks:
            break
    fused = sch.fuse(*loops[:take]) if take > 1 else loops[0]
    if total > 1:
        sch.parallel(fused)
    return fused


def vectorize_inner(sch: Schedule, blk, lanes: int, loop=None) -> bool:  # type: ignore[no-untyped-def]
    """Vectorize ``loop`` (default: the block's innermost) by the widest of lanes, lanes/2, lanes/4
    dividing its extent, or whole if it is no longer than a register."""
    loops = sch.get_loops(blk)
    if not loops or is_reduction(sch, blk):
        return False
    inner = loops[-1] if loop is None else loop
    if len(sch.get_child_blocks(inner)) > 1:
        return False  # other blocks (e.g. a reduction computed at this loop) nest here: not a vector lane
    ext = loop_extent(sch, inner)
    if 4 <= ext <= lanes:
        sch.vectorize(inner)
        return True
    for width in (lanes, lanes // 2, lanes // 4):
        if width >= 4 and ext % width == 0:
            _, vi = sch.split(inner, [None, width])
            sch.vectorize(vi)
            return True
    return False


def vectorize_reduction(sch: Schedule, blk, lanes: int) -> bool:  # type: ignore[no-untyped-def]
    """Vectorise a block's innermost reduction loop: ``lanes`` partial results (rfactor), then a
    short final reduction over the lanes. Only when the loop is the block's last iterator, and only
    if the transformation succeeds on a scratch copy first (rfactor rejects some reductions with
    internal errors rather than schedule errors)."""
    loops = sch.get_loops(blk)
    if not loops or not is_reduction(sch, blk):
        return False
    iters = sch.get(blk).iter_vars
    if int(iters[-1].iter_type) == 0:
        return False
    ext = loop_extent(sch, loops[-1])
    name = block_name(sch, blk)
    for width in (lanes, lanes // 2):
        if width >= 4 and ext % width == 0 and ext >= 2 * width:
            try:
                _rfactor_inner(sch.copy(), name, width)
            except Exception:  # noqa: BLE001 - any failure: leave the reduction scalar
                return False
            _rfactor_inner(sch, name, width)
            return True
    return False


def _rfactor_inner(sch: Schedule, name: str, width: int) -> None:
    blk = sch.get_sblock(name)
    out_rank = len(sch.get(blk).writes[0].source.shape)
    _, ki = sch.split(sch.get_loops(blk)[-1], [None, width])
    rf = sch.rfactor(ki, factor_axis=out_rank)  # lanes last: the partial sums are one vector
    sch.vectorize(sch.get_loops(rf)[-1])


def divisors(n: int, upto: int | None = None) -> list[int]:
    """Divisors of n (<= upto), ascending."""
    return [d for d in range(1, (upto or n) + 1) if n % d == 0]
