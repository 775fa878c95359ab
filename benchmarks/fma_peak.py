"""This machine's fp32 FMA peak, measured with a TVM kernel of independent FMA chains in registers.

Why measure it: the formula (cores x clock x FMA units x lanes x 2 flops) needs the sustained clock
and how many full-width FMAs a core issues per cycle, and /proc/cpuinfo gives neither. On the AMD
EPYC (Zen 4) VM it says 2.60 GHz while the cores ran at ~3.6 GHz, and Zen 4 splits a 512-bit FMA
over both of its 256-bit FMA pipes (one zmm FMA per cycle, not two): the formula said 333 GFLOPS
for 2 cores, a C loop of 12 zmm FMA chains (gcc -O2, OpenMP) measured 233 (115 per core).

The kernel: per thread, ``chains`` vector accumulators, each updated ``acc += x * y[k]`` for every
``k``: ``y[k]`` is one broadcast shared by all chains, ``x`` two vectors held in registers. Twelve
chains cover the FMA latency (4-5 cycles) times two pipes on current x86 cores, and the 12 + 2 + 1
registers fit even AVX2's 16.
"""

from __future__ import annotations

import time

import numpy as np

#: independent accumulator vectors per thread (latency x pipes <= 12 on Ice Lake, Zen 3 and Zen 4)
CHAINS = 12
#: broadcast values swept per outer step (1 KiB: stays in L1)
INNER = 256
#: timed calls; the fastest counts
CALLS = 15
#: what the benchmarks' JSON says about the peak they divide by
HOW = f"measured: best of {CALLS} calls of {CHAINS} independent FMA chains per thread (benchmarks/fma_peak.py)"


def _build(threads: int, lanes: int, outer: int, target: str) -> tuple[object, int]:
    """The compiled FMA kernel and its flop count per call."""
    import tvm
    from tvm import te
    from tvm.s_tir import Schedule

    from portable.targets import resolve_target
    from schedules.x86.registers import keep_in_registers

    x = te.placeholder((threads, 2, lanes), "float32", name="x")
    y = te.placeholder((INNER,), "float32", name="y")
    ko = te.reduce_axis((0, outer), name="ko")
    ki = te.reduce_axis((0, INNER), name="ki")
    acc = te.compute((threads, CHAINS, lanes), lambda t, j, v: te.sum(x[t, j % 2, v] * y[ki], axis=[ko, ki]),
                     name="acc")
    sch = Schedule(te.create_prim_func([x, y, acc]))
    blk = sch.get_sblock("acc")
    out = sch.cache_write(blk, 0, "global")
    keep_in_registers(sch, blk)  # the accumulators: a stack array LLVM keeps in registers
    t = sch.get_loops(out)[0]
    sch.parallel(t)
    sch.compute_at(blk, t)
    _, j, v, k_out, k_in = sch.get_loops(blk)
    sch.reorder(k_out, k_in, j, v)
    sch.unroll(j)
    sch.vectorize(v)
    sch.decompose_reduction(blk, k_out)
    _, oj, ov = sch.get_loops(out)
    sch.vectorize(ov)
    fn = tvm.compile(sch.mod, target=resolve_target(target).tvm())["main"]
    return fn, 2 * threads * CHAINS * lanes * outer * INNER


def measured_fma_peak_gflops(threads: int, target: str = "host", seconds: float = 0.05, calls: int = CALLS) -> float:
    """Best GFLOPS of ``calls`` runs (about ``seconds`` each) of the FMA-chain kernel on ``threads``
    threads with ``target``'s vector width; checks the kernel's result against NumPy first."""
    import tvm

    from portable.targets import resolve_target

    lanes = resolve_target(target).vector_lanes_f32
    # ~100 GFLOPS per thread; at most 2^24 terms per sum, so with x in {1, 2} and y = 1 every partial
    # sum is an integer fp32 holds exactly and the result can be checked for equality
    outer = min(max(1, int(seconds * 100e9 / (2 * CHAINS * lanes * INNER))), (1 << 24) // INNER - 1)
    fn, flops = _build(threads, lanes, outer, target)
    rng = np.random.default_rng(0)
    x_np = rng.integers(1, 3, (threads, 2, lanes)).astype(np.float32)
    y_np = np.ones(INNER, np.float32)
    x, y = tvm.runtime.tensor(x_np), tvm.runtime.tensor(y_np)
    acc = tvm.runtime.empty((threads, CHAINS, lanes), "float32")
    fn(x, y, acc)
    want = x_np[:, np.arange(CHAINS) % 2, :] * float(outer * INNER)
    if not np.array_equal(acc.numpy(), want):
        raise RuntimeError("FMA peak kernel computed a wrong sum: its timing would not mean anything")
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn(x, y, acc)
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9
