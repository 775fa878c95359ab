"""Tuning benchmark: portable's tuner vs TVM MetaSchedule on an N^3 fp32 matmul, and vs numpy.

Both tuners get the same kernel (the PrimFunc portable's compiler builds for ``MatMul``) and the
same number of measured trials. Afterwards both best schedules, portable's untuned template
default and numpy are re-timed in this process with the same ``time_evaluator`` settings. Writes
``benchmarks/results/tuning_matmul<N>.json`` and ``.png`` (best-so-far GFLOPS per trial).

    PORTABLE_NO_CACHE=1 python benchmarks/bench_tuning.py --size 512 --trials 32
    python benchmarks/bench_tuning.py --size 1024 --trials 200 --ms-trials 200
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import types
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def stub_tensor_intrin() -> None:
    """Import only the x86 tensor intrinsics (MetaSchedule otherwise imports all of them: 80-94 s)."""
    import tvm.s_tir as st

    pkg = types.ModuleType("tvm.s_tir.tensor_intrin")
    pkg.__path__ = [os.path.join(os.path.dirname(st.__file__), "tensor_intrin")]
    sys.modules["tvm.s_tir.tensor_intrin"] = pkg
    importlib.import_module("tvm.s_tir.tensor_intrin.x86")


def fast_build(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's default build minus its ``import tvm.s_tir.tensor_intrin`` (paid per worker)."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.tirx.build(mod, target=target)


def time_module(mod: Any, target: Any, args: list[Any]) -> tuple[float, float]:
    """(median, min) seconds of a compiled TIR module (same evaluator settings for every contender)."""
    import tvm

    ex = tvm.compile(mod, target=target)
    timer = ex.mod.time_evaluator("main", tvm.cpu(0), number=5, repeat=7, min_repeat_ms=50)
    res = timer(*args).results
    return float(np.median(res)), float(np.min(res))


def time_numpy(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(median, min) seconds of ``a @ b`` (numpy's BLAS)."""
    ts = []
    a @ b
    for _ in range(30):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), float(np.min(ts))


def run_portable(task: Any, trials: int, workdir: str) -> dict[str, Any]:
    """Tune with portable; returns its summary plus the tuning wall time."""
    from portable.tune import tune_tasks

    log = os.path.join(workdir, "portable.jsonl")
    t0 = time.time()
    summary = tune_tasks([task], trials=trials, resume=False, log=log, batch_size=8, progress=True)
    summary["wall_s"] = time.time() - t0
    return summary


def ms_curve(work_dir: str) -> list[float]:
    """Best-so-far seconds after each MetaSchedule trial (records in commit order; failures skipped)."""
    path = os.path.join(work_dir, "database_tuning_record.json")
    best, curve = float("inf"), []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)[1]
            secs = [float(x) for x in (rec[1] or [])]
            if secs and max(secs) < 1e9:
                best = min(best, float(np.mean(secs)))
            curve.append(best)
    return curve


def run_metaschedule(func: Any, target: Any, trials: int, workdir: str) -> tuple[Any, dict[str, Any]]:
    """Tune with MetaSchedule; returns (best schedule's IRModule or None, info)."""
    import logging

    import tvm
    from tvm.s_tir import meta_schedule as ms

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    stub_tensor_intrin()
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    work = os.path.join(workdir, "ms")
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.time()
    db = ms.tune_tir(
        mod=mod, target=target, work_dir=work, max_trials_global=trials, num_trials_per_iter=min(32, trials),
        builder=ms.builder.LocalBuilder(timeout_sec=120, f_build=fast_build),
        runner=ms.runner.LocalRunner(timeout_sec=120, evaluator_config=ms.runner.EvaluatorConfig(
            number=3, repeat=1, min_repeat_ms=100, enable_cpu_cache_flush=False)),
        database="json", cost_model="xgb", strategy="evolutionary", seed=0)
    wall = time.time() - t0
    sch = db.query_schedule(mod, target=target, workload_name="main")
    return (sch.mod if sch is not None else None), {"wall_s": wall, "curve_s": ms_curve(work)}


def plot(result: dict[str, Any], path: str) -> None:
    """Best-so-far GFLOPS per trial for both tuners, numpy as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flops = result["flops"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, key in (("portable", "portable_curve_s"), ("MetaSchedule", "metaschedule_curve_s")):
        curve = result.get(key) or []
        if curve:
            ax.plot(range(1, len(curve) + 1), [flops / s / 1e9 if s and np.isfinite(s) else 0 for s in curve],
                    label=name, marker=".")
    ax.axhline(flops / result["numpy_min_s"] / 1e9, color="gray", ls="--", label="numpy (BLAS), best run")
    ax.set_xlabel("trial")
    ax.set_ylabel("best-so-far GFLOPS (as measured while tuning)")
    ax.set_title(f"fp32 matmul {result['size']}^3 on {result['target']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def reach_within(result: dict[str, Any], tol: float) -> dict[str, dict[str, Any]]:
    """Trials (and seconds, at each tuner's mean seconds per trial) until each best-so-far curve
    is within ``tol`` of the better of the two final results."""
    curves = {k: result.get(f"{k}_curve_s") for k in ("portable", "metaschedule")}
    curves = {k: [c for c in v if c] for k, v in curves.items() if v}
    if not curves:
        return {}
    target = min(min(v) for v in curves.values()) * (1 + tol)
    out = {}
    for k, curve in curves.items():
        hit = next((i + 1 for i, c in enumerate(curve) if c <= target), None)
        per_trial = result[f"{k}_wall_s"] / max(len(curve), 1)
        out[k] = {"trials": hit, "seconds": hit * per_trial if hit else float("nan")}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write JSON + PNG."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--trials", type=int, default=32, help="portable trials")
    p.add_argument("--ms-trials", type=int, help="MetaSchedule trials (default: same as --trials)")
    p.add_argument("--skip-ms", action="store_true")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = p.parse_args(argv)
    os.environ.setdefault("PORTABLE_NO_CACHE", "1")
    from portable.targets import configure_threads, resolve_target

    configure_threads()
    import tvm

    from portable.tune._worker import apply_layout_rewrite
    from portable.tune.tasks import kernel_task
    from schedules import apply_schedule

    n = args.size
    tgt = resolve_target("host")
    task = kernel_task("matmul", f"{n}x{n}x{n}", tgt)
    workdir = tempfile.mkdtemp(prefix="bench_tuning_")
    result: dict[str, Any] = {"size": n, "flops": 2.0 * n ** 3, "target": tgt.key, "trials": args.trials,
                              "threads": os.environ.get("TVM_NUM_THREADS")}
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    # numpy first: TVM's thread pool spins after each parallel call and would starve the BLAS threads
    result["numpy_s"], result["numpy_min_s"] = time_numpy(a, b)
    summary = run_portable(task, args.trials, workdir)
    (ts,) = summary["tasks"]
    result.update(portable_wall_s=summary["wall_s"], portable_curve_s=ts["history"],
                  portable_best_knobs=ts["best_knobs"], portable_failures=ts["failures"])

    dev = tvm.cpu(0)

    def timed(func: Any, rewrites: dict[int, Any]) -> tuple[float, float]:
        bb = apply_layout_rewrite(rewrites[1], b) if 1 in rewrites else b
        args_ = [tvm.runtime.tensor(a, dev), tvm.runtime.tensor(bb, dev), tvm.runtime.empty((n, n), "float32", dev)]
        t = time_module(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), tgt.tvm(), args_)
        out = args_[2].numpy()
        np.testing.assert_allclose(out, a @ b, rtol=1e-3, atol=1e-2 * np.sqrt(n))
        return t

    for label, knobs in (("default", None), ("portable", ts["best_knobs"])):
        ctx = task.context()
        func, _ = apply_schedule(task.func, ctx, knobs)
        result[f"{label}_s"], result[f"{label}_min_s"] = timed(func, ctx.layout_rewrites)
    if not args.skip_ms:
        ms_mod, info = run_metaschedule(task.func, tgt.tvm(), args.ms_trials or args.trials, workdir)
        result.update(metaschedule_wall_s=info["wall_s"], metaschedule_curve_s=info["curve_s"],
                      metaschedule_trials=args.ms_trials or args.trials)
        if ms_mod is not None:
            result["metaschedule_s"], result["metaschedule_min_s"] = timed(ms_mod["main"], {})
    result["reach_within_5pct"] = reach_within(result, 0.05)
    for key in ("default", "portable", "metaschedule", "numpy"):
        if f"{key}_s" in result:
            result[f"{key}_gflops"] = result["flops"] / result[f"{key}_s"] / 1e9
            result[f"{key}_best_gflops"] = result["flops"] / result[f"{key}_min_s"] / 1e9
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"tuning_matmul{n}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    plot(result, stem + ".png")
    shutil.rmtree(workdir, ignore_errors=True)
    for key in ("default", "portable", "metaschedule", "numpy"):
        if f"{key}_s" in result:
            print(f"{key:13s} median {result[f'{key}_s'] * 1e3:9.3f} ms {result[f'{key}_gflops']:7.1f} GFLOPS"
                  f"   best {result[f'{key}_min_s'] * 1e3:9.3f} ms {result[f'{key}_best_gflops']:7.1f} GFLOPS")
    print(f"tuning wall time: portable {result['portable_wall_s']:.0f}s"
          + (f", MetaSchedule {result['metaschedule_wall_s']:.0f}s" if "metaschedule_wall_s" in result else ""))
    for tuner, r in result["reach_within_5pct"].items():
        print(f"{tuner}: within 5% of the better final result after {r['trials']} trials, ~{r['seconds']:.0f} s")
    print(f"wrote {stem}.json and {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
