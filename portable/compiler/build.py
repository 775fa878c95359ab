"""Build: fused, scheduled kernels -> one TVM module + an execution plan -> Executable."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any, Callable

import numpy as np
import tvm
import tvm_ffi

from .. import __version__
from ..graph import Graph
from ..targets import TargetInfo, configure_threads, resolve_target
from .fuse import fuse
from .lower import Kernel, lower_group
from .passes import simplify

log = logging.getLogger("portable.compile")

#: returns knob values for a kernel (from tuning logs) or None for the template default
KnobLookup = Callable[[Kernel, TargetInfo], "dict[str, Any] | None"]


def workload_key(func: tvm.tirx.PrimFunc) -> str:
    """Stable identity of an unscheduled kernel: its structural hash (shapes, dtypes, algorithm)."""
    return f"{tvm_ffi.structural_hash(func.without_attr('global_symbol')) & 0xFFFFFFFFFFFFFFFF:016x}"


def relax_input_alignment(func: tvm.tirx.PrimFunc, indices: list[int]) -> tvm.tirx.PrimFunc:
    """Declare the buffers of the params at ``indices`` aligned to their element only (not 64 bytes).

    Those params receive the caller's arrays in ``Executable.run`` without a copy: numpy starts
    large arrays on 16-byte boundaries, and copying them into aligned buffers cost more than the
    kernel reading them (0.16 ms for the 800 KB input of a 0.5 ms ResNet layer). On a declared
    64-byte alignment LLVM may emit aligned vector moves that fault on such data; with the element
    alignment it emits unaligned ones, which run at the same speed on aligned data (x86 since
    Nehalem, AArch64 NEON).
    """
    from tvm.tirx.transform.common import BufferReplacer

    swap = {}
    for i in indices:
        old = func.params[i]
        t = old.ty
        swap[old] = tvm.tirx.decl_buffer(t.shape, t.dtype, old.name, None, t.strides, t.elem_offset,
                                         old.scope(), max(1, tvm_ffi.dtype(str(t.dtype)).bits // 8), t.offset_factor)
    return BufferReplacer(swap)(func) if swap else func


def plan_memory(graph: Graph, steps: list[tuple[str, list[str], int]]) -> dict[str, int]:
    """Assign each intermediate value a reusable slot (same dtype, freed after its last use)."""
    last_use: dict[str, int] = {}
    for i, (_, args, nin) in enumerate(steps):
        for a in args[:nin]:
            last_use[a] = i
    slot_of: dict[str, int] = {}
    free: dict[str, list[int]] = {}
    slot_dtype: list[str] = []
    keep = set(graph.outputs) | set(graph.inputs) | set(graph.constants)
    for i, (_, args, nin) in enumerate(steps):
        for out in args[nin:]:
            if out in keep or out in slot_of:
                continue
            dt = graph.values[out].dtype
            pool = free.setdefault(dt, [])
            if pool:
                slot_of[out] = pool.pop()
            else:
                slot_of[out] = len(slot_dtype)
                slot_dtype.append(dt)
        for a in args[:nin]:
            if a in slot_of and last_use.get(a) == i:
                free.setdefault(graph.values[a].dtype, []).append(slot_of[a])
    return slot_of


def compile_graph(graph: Graph, target: str | TargetInfo | None = "host",
                  knob_lookup: KnobLookup | None = None, progress: bool = False) -> Any:
    """Compile a Graph for ``target``; returns a portable Executable."""
    from schedules import ScheduleContext, apply_schedule

    from ..runtime.executable import Executable, Plan

    configure_threads()
    tgt = resolve_target(target)
    t0 = time.perf_counter()
    graph = simplify(graph, tgt)
    groups = fuse(graph)
    funcs: dict[str, tvm.tirx.PrimFunc] = {}
    by_workload: dict[str, str] = {}
    steps: list[tuple[str, list[str], int]] = []
    constants: dict[str, np.ndarray] = {}
    kernel_info: dict[str, dict[str, Any]] = {}
    for gi, group in enumerate(groups):
        kernel = lower_group(graph, group, gi)
        wkey = workload_key(kernel.func)
        ctx = ScheduleContext(kernel.family, kernel.anchor_block, kernel.anchor_attrs, tgt,
                              set(kernel.const_args))
        if wkey not in by_workload:
            knobs = knob_lookup(kernel, tgt) if knob_lookup else None
            scheduled, used = apply_schedule(kernel.func, ctx, knobs)
            fname = f"k{len(funcs)}_{kernel.name.split('_', 1)[1]}"
            # graph inputs are read in place by run(), wherever the caller's array starts
            unaligned = [i for i, a in enumerate(kernel.args[:kernel.num_inputs])
                         if a in graph.inputs] if tgt.family in ("x86", "arm") else []
            funcs[fname] = relax_input_alignment(scheduled, unaligned).with_attr("global_symbol", fname)
            by_workload[wkey] = fname
            kernel_info[fname] = {"workload": wkey, "family": kernel.family, "knobs": used,
                                  "unaligned_params": unaligned, "layout_rewrites": ctx.layout_rewrites}
        fname = by_workload[wkey]
        rewrites = kernel_info[fname]["layout_rewrites"]
        args = list(kernel.args)
        for idx, cname in kernel.const_args.items():
            value = graph.constants[cname]
            if idx in rewrites:
                packed = f"{cname}::{fname}:{idx}"
                if packed not in constants:
                    constants[packed] = rewrites[idx].apply(value)
                args[idx] = packed
            else:
                constants[cname] = value
        steps.append((fname, args, kernel.num_inputs))
    mod = tvm.IRModule(funcs)
    t1 = time.perf_counter()
    lib = tvm.compile(mod, target=tgt.tvm())
    so_path = None
    if tgt.host_runnable:
        # link to a shared library now: the first run is then not slow (lazy JIT), save() just copies it
        import tempfile

        so_path = os.path.join(tempfile.mkdtemp(prefix="portable-"), "kernels.so")
        lib.export_library(so_path)
        lib = tvm.runtime.load_module(so_path)
    t2 = time.perf_counter()
    log.info("compiled %d kernels (%d groups) in %.1fs (schedule %.1fs, codegen %.1fs)",
             len(funcs), len(groups), t2 - t0, t1 - t0, t2 - t1)
    slots = plan_memory(graph, steps)
    values = {v: {"shape": list(graph.values[v].shape), "dtype": graph.values[v].dtype}
              for _, args, _ in steps for v in args if v in graph.values}
    for v in list(graph.inputs) + list(graph.outputs):
        values[v] = {"shape": list(graph.values[v].shape), "dtype": graph.values[v].dtype}
    for c, arr in constants.items():
        values[c] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    output_consts = {o: graph.constants[o] for o in graph.outputs if o in graph.constants}
    constants.update(output_consts)
    plan = Plan(
        inputs=list(graph.inputs),
        outputs=list(graph.outputs),
        output_names=list(getattr(graph, "output_names", graph.outputs)),
        values=values,
        steps=[{"kernel": f, "args": a, "num_inputs": n} for f, a, n in steps],
        slots=slots,
        target=tgt.name,
        target_key=tgt.key,
        kernels={f: {k: v for k, v in info.items() if k != "layout_rewrites"} for f, info in kernel_info.items()},
        version=__version__,
    )
    return Executable(lib, plan, constants, tgt, so_path)


def cache_key(parts: list[bytes]) -> str:
    """Hash of everything a compiled artifact depends on."""
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:32]


def cache_dir() -> str:
    """Directory of cached compiled artifacts (PORTABLE_CACHE_DIR, default ~/.cache/portable)."""
    d = os.environ.get("PORTABLE_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "portable"))
    os.makedirs(d, exist_ok=True)
    return d
