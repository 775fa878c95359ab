"""Measurement worker: a child process that builds, checks and times candidates.

Run as ``python -m portable.tune._worker RFD WFD``; it reads length-prefixed pickled requests from
file descriptor RFD and answers on WFD. A candidate that crashes (segfault in generated code or
in LLVM) or hangs takes only this process down; the parent notices, records the candidate as
failed and starts a fresh worker. Nothing here runs in the tuner's own process.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import tempfile
import time
import traceback
from typing import Any

import numpy as np

HEADER = struct.Struct("<Q")


def read_message(fd: int) -> Any:
    """Read one length-prefixed pickled message from ``fd`` (None at end of file)."""
    head = _read_exact(fd, HEADER.size)
    if head is None:
        return None
    body = _read_exact(fd, HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def write_message(fd: int, obj: Any) -> None:
    """Write one length-prefixed pickled message to ``fd``."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = HEADER.pack(len(body)) + body
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def random_inputs(shapes: list[list[int]], dtypes: list[str], seed: int) -> list[np.ndarray]:
    """Deterministic random inputs: normal floats, small non-negative integers, random booleans."""
    rng = np.random.default_rng(seed)
    out = []
    for shape, dtype in zip(shapes, dtypes):
        if dtype == "bool":
            out.append(rng.random(shape) < 0.5)
        elif np.issubdtype(np.dtype(dtype), np.integer):
            out.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def outputs_match(got: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> tuple[bool, str]:
    """Compare a candidate output with the reference; tolerance scales with the output's magnitude."""
    if got.shape != ref.shape:
        return False, f"shape {got.shape} != reference {ref.shape}"
    if ref.dtype == np.bool_ or np.issubdtype(ref.dtype, np.integer):
        bad = int(np.count_nonzero(got != ref))
        return bad == 0, f"{bad} elements differ"
    g, r = got.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(r)
    scale = float(np.abs(r[finite]).mean()) if finite.any() else 1.0
    ok = np.allclose(g, r, rtol=rtol, atol=atol * max(scale, 1e-6), equal_nan=True)
    diff = np.abs(g - r)
    diff = diff[np.isfinite(diff)]
    err = float(diff.max()) if diff.size else (0.0 if ok else float("inf"))
    return bool(ok), f"max abs error {err:.3g} (mean |ref| {scale:.3g})"


def apply_layout_rewrite(rewrite: Any, arr: np.ndarray) -> np.ndarray:
    """A constant in the layout a template chose (``.apply(numpy)`` rewrites, or a tvm IndexMap)."""
    if hasattr(rewrite, "apply"):
        return np.ascontiguousarray(rewrite.apply(arr))
    import tvm

    return rewrite.map_tensor(tvm.runtime.tensor(arr)).numpy()


class Worker:
    """State of one worker process: registered tasks, their inputs and reference outputs."""

    def __init__(self) -> None:
        """Start with no tasks and no RPC session."""
        self.tasks: dict[str, dict[str, Any]] = {}
        self.session: Any = None
        self.session_addr: tuple[str, int, str | None] | None = None
        self.tmpdir = tempfile.mkdtemp(prefix="portable_tune_")

    # ---------------------------------------------------------------------------------------- build
    def build(self, task: dict[str, Any], knobs: dict[str, Any] | None, unscheduled: bool = False) -> Any:
        """Schedule ``task`` with ``knobs`` and compile it; returns (executable, layout rewrites)."""
        import tvm

        from schedules import ScheduleContext, apply_schedule

        tgt = task["target"]
        ctx = ScheduleContext(task["family"], task["anchor_block"], dict(task["anchor_attrs"]), tgt,
                              set(task["const_params"]))
        if unscheduled:
            func = task["func"]
        else:
            try:
                func, _ = apply_schedule(task["func"], ctx, knobs)
            except Exception as exc:
                raise _StageError("schedule", exc) from exc
        try:
            ex = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=tgt.tvm())
        except Exception as exc:
            raise _StageError("build", exc) from exc
        return ex, dict(ctx.layout_rewrites)

    def arguments(self, task: dict[str, Any], rewrites: dict[int, Any]) -> list[np.ndarray]:
        """The task's inputs (with the candidate's constant layout rewrites applied)."""
        return [apply_layout_rewrite(rewrites[i], arr) if i in rewrites else arr
                for i, arr in enumerate(task["inputs"])]

    # ------------------------------------------------------------------------------------------ run
    def run(self, task: dict[str, Any], ex: Any, inputs: list[np.ndarray], timing: bool) -> tuple[list, list]:
        """Run once (outputs) and optionally time; local or over RPC depending on the task's runner."""
        runner = task["runner"]
        if runner and runner.get("kind") == "rpc":
            return self._run_rpc(task, ex, inputs, timing)
        import tvm

        dev = tvm.cpu(0)
        outs = [tvm.runtime.tensor(np.full(s, np.nan if np.dtype(d).kind == "f" else 0, dtype=d), dev)
                for s, d in zip(task["out_shapes"], task["out_dtypes"])]
        args = [tvm.runtime.tensor(a, dev) for a in inputs] + outs
        ex["main"](*args)
        results = [o.numpy() for o in outs]
        times: list[float] = []
        if timing:
            opt = task["options"]
            timer = ex.mod.time_evaluator("main", dev, **_timer_args(opt))
            times = list(timer(*args).results)
        return results, times

    def _session(self, runner: dict[str, Any]) -> Any:
        from tvm import rpc

        addr = (runner["host"], int(runner["port"]), runner.get("key"))
        if self.session is None or self.session_addr != addr:
            if addr[2]:
                self.session = rpc.connect_tracker(addr[0], addr[1]).request(addr[2])
            else:
                self.session = rpc.connect(addr[0], addr[1])
            self.session_addr = addr
        return self.session

    def _run_rpc(self, task: dict[str, Any], ex: Any, inputs: list[np.ndarray], timing: bool) -> tuple[list, list]:
        import tvm

        remote = self._session(task["runner"])
        path = os.path.join(self.tmpdir, f"cand_{os.getpid()}_{time.monotonic_ns()}.so")
        tgt = task["target"]
        if tgt.cross_compiler:
            from tvm.support import cc

            ex.export_library(path, fcompile=cc.cross_compiler(tgt.cross_compiler))
        else:
            ex.export_library(path)
        try:
            remote.upload(path)
            rlib = remote.load_module(os.path.basename(path))
        finally:
            os.remove(path)
        rdev = remote.cpu(0)
        outs = [tvm.runtime.tensor(np.zeros(s, dtype=d), rdev) for s, d in zip(task["out_shapes"], task["out_dtypes"])]
        args = [tvm.runtime.tensor(a, rdev) for a in inputs] + outs
        rlib["main"](*args)
        results = [o.numpy() for o in outs]
        times: list[float] = []
        if timing:
            opt = task["options"]
            timer = rlib.time_evaluator("main", rdev, **_timer_args(opt))
            times = list(timer(*args).results)
        return results, times

    # ------------------------------------------------------------------------------------- requests
    def register(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Store a task, draw its inputs and compute its reference output (template default schedule).

        ``msg["build_only"]``: a builder process, which only compiles candidates (no inputs, no reference).
        """
        import tvm

        task = dict(msg["task"])
        task["func"] = tvm.script.from_source(task.pop("func_script"))
        if not isinstance(task["func"], tvm.tirx.PrimFunc):
            task["func"] = task["func"]["main"]
        if msg.get("build_only"):
            self.tasks[msg["task_id"]] = task
            return {"ok": True, "reference": None}
        n = task["num_inputs"]
        task["inputs"] = random_inputs(task["shapes"][:n], task["dtypes"][:n], task["seed"])
        task["out_shapes"], task["out_dtypes"] = task["shapes"][n:], task["dtypes"][n:]
        source = "default"
        try:
            ex, rewrites = self.build(task, None)
        except _StageError:
            ex, rewrites = self.build(task, None, unscheduled=True)
            source = "unscheduled"
        task["reference"], _ = self.run(task, ex, self.arguments(task, rewrites), timing=False)
        self.tasks[msg["task_id"]] = task
        return {"ok": True, "reference": source}

    def measure(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Build, run, check and time one candidate."""
        fault = msg.get("fault")
        if fault == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif fault == "hang":
            time.sleep(10 ** 6)
        elif fault == "raise":
            raise RuntimeError("injected failure")
        task = self.tasks[msg["task_id"]]
        t0 = time.perf_counter()
        prebuilt = msg.get("prebuilt")
        if prebuilt is not None:  # compiled by a builder process: load it (the build time is the builder's)
            import tvm

            ex, rewrites, build_s = _Loaded(tvm.runtime.load_module(prebuilt["path"])), prebuilt["rewrites"], \
                prebuilt["build_s"]
        else:
            try:
                ex, rewrites = self.build(task, msg["knobs"])
            except _StageError as exc:
                return {"ok": False, "error": str(exc), "build_s": time.perf_counter() - t0}
            build_s = time.perf_counter() - t0
        try:
            outs, _ = self.run(task, ex, self.arguments(task, rewrites), timing=False)
        except Exception as exc:
            return {"ok": False, "error": f"run: {type(exc).__name__}: {exc}", "build_s": build_s}
        opt = task["options"]
        for i, (got, ref) in enumerate(zip(outs, task["reference"])):
            ok, detail = outputs_match(got, ref, opt["rtol"], opt["atol"])
            if not ok:
                return {"ok": False, "error": f"mismatch: output {i} differs from the reference: {detail}",
                        "build_s": build_s}
        try:
            _, times = self.run(task, ex, self.arguments(task, rewrites), timing=True)
        except Exception as exc:
            return {"ok": False, "error": f"run: {type(exc).__name__}: {exc}", "build_s": build_s}
        return {"ok": True, "verified": True, "median_s": float(np.median(times)), "std_s": float(np.std(times)),
                "build_s": build_s}


    def compile(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Builder request: schedule and compile one candidate into a shared library at ``msg["path"]``."""
        if msg.get("fault") == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        task = self.tasks[msg["task_id"]]
        t0 = time.perf_counter()
        try:
            ex, rewrites = self.build(task, msg["knobs"])
            ex.export_library(msg["path"])
        except _StageError as exc:
            return {"ok": False, "error": str(exc), "build_s": time.perf_counter() - t0}
        except Exception as exc:  # export / link failure
            return {"ok": False, "error": f"build: {type(exc).__name__}: {exc}"[:2000],
                    "build_s": time.perf_counter() - t0}
        return {"ok": True, "path": msg["path"], "rewrites": rewrites, "build_s": time.perf_counter() - t0}


def _timer_args(opt: dict[str, Any]) -> dict[str, Any]:
    """time_evaluator arguments for the cache protocol ``opt["cache"]`` (see
    ``portable.tune.measure.CACHE_PROTOCOLS``): hot repeats, or one call per repeat after the caches
    are flushed ("cold") or the worker threads' L2 evicted ("warm")."""
    cache = opt.get("cache", "cold")
    if cache == "hot":
        return {"number": opt["number"], "repeat": opt["repeat"], "min_repeat_ms": opt["min_repeat_ms"]}
    preproc = "cache_flush_cpu_non_first_arg" if cache == "cold" else _l2_evictor()
    return {"number": 1, "repeat": max(opt["repeat"], 1) * max(opt["number"], 1), "min_repeat_ms": 0,
            "f_preproc": preproc}


def l2_bytes(default: int = 2 << 20) -> int:
    """Per-core L2 size of this machine (Linux sysfs), else ``default``."""
    for index in range(5):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{index}"
        try:
            with open(f"{base}/level") as f:
                if f.read().strip() != "2":
                    continue
            with open(f"{base}/size") as f:
                text = f.read().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * scale
    return default


_EVICTOR = "portable.tune.evict_l2"
_evictor_state: dict[str, Any] = {}


def _l2_evictor() -> str:
    """Name of a global function that makes the TVM worker threads each overwrite twice their L2 (a
    parallel kernel over a scratch buffer), leaving the kernel's arguments in L3 only; registered on
    first use."""
    if _EVICTOR in _evictor_state:
        return _EVICTOR
    import tvm
    from tvm import te

    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    n = 2 * l2_bytes() * max(threads, 1) // 4
    src = te.placeholder((n,), "float32", name="src")
    dst = te.compute((n,), lambda i: src[i] + 1.0, name="dst")
    sch = tvm.s_tir.Schedule(te.create_prim_func([src, dst]))
    (loop,) = sch.get_loops(sch.get_sblock("dst"))
    outer, inner = sch.split(loop, [None, 1 << 14])
    sch.parallel(outer)
    sch.vectorize(sch.split(inner, [None, 16])[1])
    lib = tvm.compile(sch.mod, target="llvm")
    dev = tvm.cpu(0)
    buffers = (tvm.runtime.tensor(np.zeros(n, "float32"), dev), tvm.runtime.empty((n,), "float32", dev))
    fn = lib["main"]

    def evict(*_args: Any) -> None:
        fn(*buffers)

    tvm.register_global_func(_EVICTOR, evict, override=True)
    _evictor_state[_EVICTOR] = (lib, buffers, evict)
    return _EVICTOR


class _Loaded:
    """A loaded shared library with the interface of ``tvm.compile``'s result used by ``Worker.run``."""

    def __init__(self, mod: Any):
        self.mod = mod

    def __getitem__(self, name: str) -> Any:
        return self.mod[name]


class _StageError(Exception):
    def __init__(self, stage: str, exc: BaseException):
        super().__init__(f"{stage}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"[:2000])


def main(argv: list[str]) -> int:
    """Serve requests until the parent closes the pipe."""
    rfd, wfd = int(argv[0]), int(argv[1])
    worker = Worker()
    import tvm  # noqa: F401  (import before announcing readiness, so start-up time is not a candidate's)

    import schedules  # noqa: F401

    write_message(wfd, {"ready": True, "pid": os.getpid()})
    while True:
        msg = read_message(rfd)
        if msg is None or msg.get("op") == "exit":
            return 0
        try:
            reply = getattr(worker, msg["op"])(msg)
        except Exception as exc:
            reply = {"ok": False, "error": f"{msg.get('op')}: {type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()[-4000:]}
        write_message(wfd, reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
