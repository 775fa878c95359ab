"""Measuring candidates: build, run in an isolated process, check against a reference, time.

Each candidate is ``schedules.apply_schedule(func, ctx, knobs)`` + ``tvm.compile``, run in a worker
process (``portable.tune._worker``) with a wall-clock timeout. A candidate that raises, crashes
the process or hangs is recorded as failed and tuning goes on with a fresh worker. Before its
time counts, a candidate's outputs must match the reference: the template-default schedule's
outputs on the same random inputs, computed once per task. Timing is the median of repeats of
TVM's ``time_evaluator``, locally or on a remote device over ``tvm.rpc`` (``rpc=(host, port)``).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from .records import Record, make_record
from .tasks import Task

_ROOTS = {os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}


@dataclass
class MeasureOptions:
    """How candidates are run and checked."""

    number: int = 3  # runs per timed repeat
    repeat: int = 5  # timed repeats; the median is recorded
    min_repeat_ms: int = 30  # each repeat lasts at least this long (number is raised as needed)
    timeout_s: float = 30.0  # wall-clock limit for one candidate (build + check + timing)
    rtol: float = 1e-3
    atol: float = 1e-3  # relative to the mean magnitude of the reference output
    seed: int = 0  # random inputs
    #: cache state each timed call starts from (``CACHE_PROTOCOLS``)
    cache: str = "cold"


#: How a candidate's timed calls find the caches; pick the one closest to how the model will run:
#: - "cold" (default): every argument but the first (the activation the previous kernel just wrote)
#:   flushed to memory before each call: a model whose weights do not fit the last-level cache
#:   (ResNet-18's 45 MB of weights on a 48 MB L3 shared with other tenants);
#: - "warm": the worker threads overwrite a scratch buffer of twice their L2 before each call, so
#:   the arguments come from L3;
#: - "hot": back-to-back calls, everything in L1/L2: a small model run in a loop, whose activations
#:   stay in L2 between kernels.
#: Measured on ShuffleNet (5.7 MB of constants; 2 threads, whole model, old and new picks in one
#: process, 30 rounds): its NCHW grouped 1x1 convolutions tuned "cold" took row tiles of 4 columns,
#: which the cold flush timed at 0.10-0.17 ms against 0.18-0.20 for 14 columns; inside the model
#: the 14-column tile runs 0.09 ms against 0.16. Those kernels re-tuned 8 minutes "hot": the model ran 0.844x
#: its time (95% interval [0.754, 0.897]); re-tuned "warm" 0.91x [0.87, 1.02] (a 7-column tile
#: with a bimodal time, median 0.068 ms over 15 calls, that runs 0.12 ms in the model).
#: "warm" runs locally only (it needs the worker's own eviction kernel).
CACHE_PROTOCOLS = ("cold", "warm", "hot")


@dataclass
class MeasureResult:
    """Outcome of one candidate."""

    knobs: dict[str, Any]
    median_s: float | None = None
    std_s: float | None = None
    verified: bool = False
    error: str | None = None
    build_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True if the candidate ran, was verified and has a time."""
        return self.verified and self.error is None and self.median_s is not None

    def to_record(self, task: Task, cache: str = "cold") -> Record:
        """The log record of this measurement (``cache``: the protocol it was timed under)."""
        return make_record(task.workload, task.family, task.target.key, self.knobs, median_s=self.median_s,
                           std_s=self.std_s, verified=self.verified, error=self.error, shape=task.shape,
                           dtypes=task.dtypes, task=task.name, cache=cache)


class MeasureError(Exception):
    """A task cannot be measured at all (its reference output could not be computed)."""


def _task_id(task: Task) -> str:
    """Key under which a worker process holds a task."""
    return f"{task.workload}@{task.target.key}"


class _WorkerProcess:
    """A live worker process and the two pipes to it."""

    def __init__(self, threads: int, startup_timeout: float):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        env = dict(os.environ)
        env["TVM_NUM_THREADS"] = str(threads)
        env["PORTABLE_STRICT_SCHEDULES"] = "1"  # a failing knob point must fail, not fall back silently
        env["PYTHONPATH"] = os.pathsep.join([*_ROOTS, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        quiet = os.environ.get("PORTABLE_TUNE_DEBUG") != "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portable.tune._worker", str(to_r), str(from_w)], pass_fds=(to_r, from_w),
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.DEVNULL if quiet else None, start_new_session=True)
        os.close(to_r)
        os.close(from_w)
        self.wfd, self.rfd = to_w, from_r
        self.tasks: set[str] = set()
        hello = self.call(None, startup_timeout)
        if not isinstance(hello, dict) or not hello.get("ready"):
            self.kill()
            raise MeasureError(f"measurement worker did not start: {hello}")

    def call(self, msg: dict[str, Any] | None, timeout: float) -> Any:
        """Send ``msg`` (unless None) and wait for the reply; returns a failure string on crash/timeout."""
        if msg is not None and not self.send(msg):
            return self._death()
        return self.receive(timeout)

    def send(self, msg: dict[str, Any]) -> bool:
        """Write a request without waiting for its reply (False if the process is gone)."""
        from ._worker import write_message

        try:
            write_message(self.wfd, msg)
            return True
        except OSError:
            return False

    def receive(self, timeout: float) -> Any:
        """The reply to the last request, or a failure string on crash/timeout (the process is then killed)."""
        from ._worker import read_message

        ready, _, _ = select.select([self.rfd], [], [], timeout)
        if not ready:
            self.kill()
            return f"timeout: no result within {timeout:.0f}s (process killed)"
        reply = read_message(self.rfd)
        if reply is None:
            return self._death()
        return reply

    def _death(self) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"crash: measurement process died with signal {name}"
        return f"crash: measurement process exited (code {code})"

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill the worker (its whole session) and close the pipes."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            self.proc.wait()
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.rfd = self.wfd = -1

    def close(self) -> None:
        """Ask the worker to exit, then make sure it did."""
        if self.proc.poll() is None and self.wfd >= 0:
            try:
                from ._worker import write_message

                write_message(self.wfd, {"op": "exit"})
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


class Measurer:
    """Measures candidates of tasks in an isolated, restartable worker process.

    ``rpc=(host, port)`` (or ``(tracker_host, tracker_port, key)``) times candidates on a remote
    ``tvm.rpc`` server: each module is exported, uploaded and timed by the remote ``time_evaluator``.
    """

    def __init__(self, options: MeasureOptions | None = None, rpc: tuple[Any, ...] | None = None,
                 startup_timeout: float = 180.0, builders: int | None = None):
        """Workers start lazily, on the first measurement. ``builders``: parallel compile processes
        (default: one per core; 0 or 1 compiles in the measuring process)."""
        self.options = options or MeasureOptions()
        if self.options.cache not in CACHE_PROTOCOLS:
            raise ValueError(f"cache protocol {self.options.cache!r}: expected one of {', '.join(CACHE_PROTOCOLS)}")
        if rpc is not None and self.options.cache == "warm":
            raise ValueError("the 'warm' cache protocol measures on this machine only: use 'cold' or 'hot' over RPC")
        self.rpc = rpc
        self.startup_timeout = startup_timeout
        self._worker: _WorkerProcess | None = None
        self._threads: int | None = None
        self.restarts = 0
        #: processes compiling candidates in parallel before they are timed one by one (local runs only:
        #: candidates are compiled on all cores, then measured with nothing else running)
        self.parallel_builds = (os.cpu_count() or 1) if builders is None else builders
        self._builders: list[_WorkerProcess | None] = []

    def __enter__(self) -> "Measurer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker and builder processes."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        for b in self._builders:
            if b is not None:
                b.close()
        self._builders = []

    def _build_all(self, task: Task, candidates: list[dict[str, Any]], faults: dict[int, str] | None) -> list[Any]:
        """Compile ``candidates`` on ``parallel_builds`` builder processes at once.

        Returns per candidate the builder's reply (``{"ok", "path", "rewrites", "build_s"}`` or
        ``{"ok": False, "error"}``) or a failure string when its builder crashed or hung (that builder
        is killed and replaced; the other candidates are unaffected). If no builder can load the
        task, every entry is None: the measuring worker then compiles them itself.
        """
        import tempfile

        tmpdir = tempfile.mkdtemp(prefix="portable_build_")
        out: list[Any] = [None] * len(candidates)
        todo = list(range(len(candidates)))
        busy: dict[int, tuple[int, float]] = {}  # builder slot -> (candidate index, deadline)
        while todo or busy:
            for slot in range(self.parallel_builds):
                if slot in busy or not todo:
                    continue
                try:
                    b = self._builder(slot, task)
                except MeasureError:
                    return [None] * len(candidates)
                i = todo.pop(0)
                msg = {"op": "compile", "task_id": _task_id(task), "knobs": candidates[i],
                       "path": os.path.join(tmpdir, f"cand{i}.so"), "fault": (faults or {}).get(i)}
                if not b.send(msg):
                    out[i] = b._death()
                    continue
                busy[slot] = (i, time.monotonic() + self.options.timeout_s)
            if not busy:
                continue
            wait = max(0.0, min(d for _, d in busy.values()) - time.monotonic())
            fds = {self._builders[s].rfd: s for s in busy}
            ready, _, _ = select.select(list(fds), [], [], wait)
            for fd in ready:
                slot = fds[fd]
                out[busy.pop(slot)[0]] = self._builders[slot].receive(0)
            for slot, (i, deadline) in list(busy.items()):
                if time.monotonic() >= deadline:
                    self._builders[slot].kill()
                    out[i] = f"timeout: no build within {self.options.timeout_s:.0f}s (process killed)"
                    del busy[slot]
        return out

    def _builder(self, slot: int, task: Task) -> _WorkerProcess:
        """A live builder process in ``slot`` that knows ``task`` (started or replaced as needed)."""
        while len(self._builders) <= slot:
            self._builders.append(None)
        b = self._builders[slot]
        if b is not None and not b.alive():
            b.kill()
            b = None
        if b is None:
            b = self._builders[slot] = _WorkerProcess(1, self.startup_timeout)
        if _task_id(task) not in b.tasks:
            reply = b.call({"op": "register", "task_id": _task_id(task), "task": self._task_payload(task),
                            "build_only": True}, self.startup_timeout)
            if not isinstance(reply, dict) or not reply.get("ok"):
                raise MeasureError(f"task {task.name}: builder could not load the task: {reply}")
            b.tasks.add(_task_id(task))
        return b

    def _runner(self) -> dict[str, Any] | None:
        if self.rpc is None:
            return None
        host, port, *key = self.rpc
        return {"kind": "rpc", "host": host, "port": int(port), "key": key[0] if key else None}

    def _ensure(self, task: Task) -> _WorkerProcess:
        threads = task.target.num_cores if task.target.host_runnable else 1
        w = self._worker
        if w is not None and (not w.alive() or self._threads != threads):
            w.kill() if not w.alive() else w.close()
            w = self._worker = None
        if w is None:
            w = self._worker = _WorkerProcess(threads, self.startup_timeout)
            self._threads = threads
        task_id = _task_id(task)
        if task_id not in w.tasks:
            reply = w.call({"op": "register", "task_id": task_id, "task": self._task_payload(task)},
                           self.startup_timeout + 4 * self.options.timeout_s)
            if not isinstance(reply, dict) or not reply.get("ok"):
                detail = reply.get("error") if isinstance(reply, dict) else reply
                self._drop_dead()
                raise MeasureError(f"task {task.name}: could not compute the reference output: {detail}")
            w.tasks.add(task_id)
        return w

    def _drop_dead(self) -> None:
        if self._worker is not None and not self._worker.alive():
            self._worker.kill()
            self._worker = None
            self.restarts += 1

    def _task_payload(self, task: Task) -> dict[str, Any]:
        return {"func_script": task.func.script(), "num_inputs": task.num_inputs, "family": task.family,
                "anchor_block": task.anchor_block, "anchor_attrs": task.anchor_attrs,
                "const_params": sorted(task.const_params), "target": task.target, "shapes": task.shape,
                "dtypes": task.dtypes, "seed": self.options.seed, "runner": self._runner(),
                "options": asdict(self.options)}

    def measure(self, task: Task, candidates: list[dict[str, Any]], fault: str | None = None,
                on_result: Callable[[MeasureResult], None] | None = None,
                build_fault: dict[int, str] | None = None) -> list[MeasureResult]:
        """Measure each knob assignment of ``task``; never raises for a bad candidate.

        A batch is first compiled by the builder processes in parallel, then each candidate is run,
        checked and timed alone. ``on_result`` is called with each result as soon as it is known.
        ``fault`` ("segfault", "hang" or "raise") makes the measuring worker fail on purpose, and
        ``build_fault`` {candidate index: "segfault"} a builder (for tests).
        """
        results: list[MeasureResult] = []
        use_builders = self.rpc is None and self.parallel_builds > 1 and len(candidates) > 1 and fault is None
        built = self._build_all(task, candidates, build_fault) if use_builders else [None] * len(candidates)
        for knobs, build in zip(candidates, built):
            if isinstance(build, str) or (isinstance(build, dict) and not build.get("ok")):
                error = build if isinstance(build, str) else build.get("error")
                res = MeasureResult(dict(knobs), error=error,
                                    build_s=float(build.get("build_s", 0.0)) if isinstance(build, dict) else 0.0)
                results.append(res)
                if on_result is not None:
                    on_result(res)
                continue
            worker = self._ensure(task)
            msg = {"op": "measure", "task_id": _task_id(task), "knobs": knobs,
                   "fault": fault, "prebuilt": build}
            try:
                reply = worker.call(msg, self.options.timeout_s)
            finally:
                if build is not None and os.path.exists(build["path"]):
                    os.remove(build["path"])
            if isinstance(reply, str):  # crash or timeout: the worker is gone
                self._worker = None
                self.restarts += 1
                res = MeasureResult(dict(knobs), error=reply)
            else:
                res = MeasureResult(dict(knobs), median_s=reply.get("median_s"), std_s=reply.get("std_s"),
                                    verified=bool(reply.get("verified")), error=reply.get("error"),
                                    build_s=float(reply.get("build_s", 0.0)))
            results.append(res)
            if on_result is not None:
                on_result(res)
        for d in {os.path.dirname(b["path"]) for b in built if isinstance(b, dict) and b.get("path")}:
            try:
                os.rmdir(d)
            except OSError:
                pass
        return results


def measure_once(task: Task, knobs: dict[str, Any] | None = None, options: MeasureOptions | None = None,
                 rpc: tuple[Any, ...] | None = None) -> MeasureResult:
    """Measure one candidate (default knobs if None) in a fresh worker."""
    with Measurer(options, rpc) as m:
        return m.measure(task, [knobs if knobs is not None else task.defaults()])[0]


def now() -> float:
    """Monotonic seconds (for budgets)."""
    return time.monotonic()
