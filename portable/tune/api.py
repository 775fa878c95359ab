"""``portable.tune(model, ...)``: tune every kernel of a model (or one kernel) and log the results.

Records are appended to ``log`` (default ``$PORTABLE_TUNING_DIR/tuning.jsonl``); the next
``portable.compile`` of the model picks the best verified knobs from the logs automatically.
"""

from __future__ import annotations

from typing import Any

from ..errors import PortableError
from ..targets import TargetInfo
from .measure import MeasureOptions, Measurer
from .scheduler import TaskScheduler, parse_budget
from .tasks import Task, extract_tasks, kernel_task


def tune_tasks(tasks: list[Task], trials: int | None = None, budget: str | float | None = None,
               resume: bool = True, log: str | None = None, batch_size: int = 8, seed: int = 0,
               progress: bool = True, options: MeasureOptions | None = None,
               rpc: tuple[Any, ...] | None = None, confirm: int = 3) -> dict[str, Any]:
    """Tune prepared tasks; see :func:`tune` for the arguments. Returns the summary dict."""
    if trials is not None and trials < 0:
        raise PortableError(f"trials must be >= 0, got {trials}")
    if confirm < 0:
        raise PortableError(f"confirm must be >= 0, got {confirm}")
    budget_s = parse_budget(budget)
    if not tasks:
        return {"target": None, "trials": 0, "elapsed_s": 0.0, "log": log, "tasks": [], "default_total_s": 0.0,
                "best_total_s": 0.0, "speedup": None, "curve": []}
    with Measurer(options, rpc) as measurer:
        sched = TaskScheduler(tasks, measurer, log, trials=trials, budget_s=budget_s, batch_size=batch_size,
                              resume=resume, seed=seed, progress=progress, confirm=confirm)
        return sched.run()


def tune(model: Any, target: str | TargetInfo | None = "host", trials: int | None = None,
         budget: str | float | None = None, resume: bool = True, log: str | None = None,
         batch_size: int = 8, seed: int = 0, progress: bool = True, options: MeasureOptions | None = None,
         rpc: tuple[Any, ...] | None = None, confirm: int = 3) -> dict[str, Any]:
    """Tune the kernels of ``model`` (a Graph, or anything ``portable.load_onnx`` takes) for ``target``.

    ``trials`` bounds the number of measured candidates over all kernels and ``budget`` the wall
    time (``"15m"``, ``"90s"`` or seconds); with neither, each kernel gets 32 trials. ``resume``
    skips candidates already in the logs. ``rpc=(host, port)`` measures on a remote ``tvm.rpc``
    server. At the end, each kernel's ``confirm`` fastest points (and its default) are measured once
    more; the compiler ranks a point by the median of its measurements. Returns a summary: per
    kernel the default and best time, speedup and knobs.
    """
    tasks = extract_tasks(model, target)
    return tune_tasks(tasks, trials, budget, resume, log, batch_size, seed, progress, options, rpc, confirm)


def tune_kernel(kind: str, shape: str, target: str | TargetInfo | None = "host", trials: int | None = None,
                budget: str | float | None = None, resume: bool = True, log: str | None = None,
                batch_size: int = 8, seed: int = 0, progress: bool = True,
                options: MeasureOptions | None = None, rpc: tuple[Any, ...] | None = None,
                confirm: int = 3) -> dict[str, Any]:
    """Tune one kernel: ``tune_kernel("matmul", "1024x1024x1024")`` or ``("conv2d", "1x64x56x56x64x3x3:p1")``."""
    task = kernel_task(kind, shape, target)
    return tune_tasks([task], trials, budget, resume, log, batch_size, seed, progress, options, rpc, confirm)


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable table of a tuning summary."""
    lines = [f"target {summary.get('target')}: {summary['trials']} trials in {summary['elapsed_s']:.1f}s, "
             f"log {summary.get('log')}"]
    lines.append(f"  {'kernel':42s} {'x':>3s} {'trials':>6s} {'default ms':>11s} {'best ms':>9s} "
                 f"{'speedup':>7s} {'GFLOPS':>7s}")
    for t in summary["tasks"]:
        d = f"{t['default_s'] * 1e3:11.4f}" if t["default_s"] else f"{'-':>11s}"
        b = f"{t['best_s'] * 1e3:9.4f}" if t["best_s"] else f"{'-':>9s}"
        sp = f"{t['speedup']:7.2f}" if t["speedup"] else f"{'-':>7s}"
        gf = f"{t['gflops']:7.1f}" if t["gflops"] else f"{'-':>7s}"
        lines.append(f"  {t['name'][:42]:42s} {t['weight']:3d} {t['trials']:6d} {d} {b} {sp} {gf}"
                     + (f"  ERROR {t['error']}" if t.get("error") else ""))
    if summary.get("speedup"):
        n, total = summary.get("compared_kernels", len(summary["tasks"])), len(summary["tasks"])
        label = "model kernels" if n == total else f"model kernels with a timed default ({n} of {total})"
        lines.append(f"  {label}: {summary['default_total_s'] * 1e3:.3f} ms -> {summary['best_total_s'] * 1e3:.3f} ms "
                     f"({summary['speedup']:.2f}x)")
    return "\n".join(lines)
