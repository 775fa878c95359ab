"""Shared benchmark helpers: thread setup, interleaved timing, machine info, JSON and plot writers.

Fairness rules every benchmark here follows:
* all competitors run in the same process, in the same run, with the same thread count
  (``set_threads`` must be called before tvm/onnxruntime create their thread pools);
* each engine is warmed up first, then the engines are timed *interleaved*, in alternating blocks that
  each open with untimed warm-up calls (see ``time_interleaved``), so a burst of load from other jobs
  on the machine hits every engine alike;
* statistics are the median with p10/p90 of the repeats, never the mean.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np


def default_threads() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def set_threads(n: int) -> None:
    """Fix the thread count for TVM (and OpenMP-based libraries); call before importing tvm/portable.

    onnxruntime takes its count from ``SessionOptions.intra_op_num_threads`` (see ``ort_session``).
    """
    os.environ["TVM_NUM_THREADS"] = str(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


def ort_session(model: Any, threads: int, profile_prefix: str | None = None) -> Any:
    """An onnxruntime CPUExecutionProvider session: all graph optimisations, sequential execution,
    ``threads`` intra-op threads; with ``profile_prefix``, its per-node profiler on."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@dataclass
class Timing:
    """Summary of repeated wall-clock measurements, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    repeats: int
    #: round of ``time_interleaved`` -> median of the block timed in it, for paired comparisons
    block_ms: dict[int, float] = field(default_factory=dict)

    @classmethod
    def from_seconds(cls, samples: Sequence[float], blocks: Mapping[int, Sequence[float]] | None = None) -> "Timing":
        """Summarise samples given in seconds (``blocks``: the same samples by round)."""
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 10)), float(np.percentile(ms, 90)),
                   float(ms.min()), int(ms.size), {r: float(np.median(b)) * 1e3 for r, b in (blocks or {}).items() if len(b)})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


#: idle time before each timed block, so no other engine's threads still spin (see time_interleaved)
BLOCK_PAUSE_S = 0.2
#: untimed calls that open each block: at least this long in all, at least one call
BLOCK_WARMUP_S = 0.03


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeat: int | Mapping[str, int],
                     warmup: int | Mapping[str, int] = 3, rounds: int = 5) -> dict[str, Timing]:
    """Time every callable ``repeat`` times after ``warmup`` calls, alternating engines in blocks.

    Each round runs one block per engine (untimed warm-up calls, then its share of the repeats), so
    engines alternate over the run (load drifts hit all of them) but never call by call: thread
    pools that spin after a call (onnxruntime's, TVM's) would otherwise steal the cores from the
    engine timed next. Each block also starts after a ``BLOCK_PAUSE_S`` pause: TVM's pool workers spin
    (yielding) for tens of milliseconds after a call, so with a 30 ms pause onnxruntime's BERT encoder
    measured 7.8-10.8 ms right after a portable block against 3.7-4.1 ms alone in its own process;
    after 200 ms both engines time as they do alone.

    After that pause neither engine is warm again at once: both pools' workers have gone to sleep
    and the caches hold the other engine's data. Measured on a ResNet-18 3x3 layer (256 ch, 14 x 14),
    calls 1-5 after a 200 ms pause (medians of 8 blocks): portable 3.66, 1.08, 0.99, 0.96, 0.82 ms
    then 0.78; onnxruntime 1.99, 1.50, 1.60, 1.25, 1.23 then 1.15. So a block opens with untimed
    calls worth ``BLOCK_WARMUP_S`` (one at least), sized from the initial warm-up's calls, and
    times steady-state latency: a block of one warm-up call and 4 timed ones measured the same layer
    at 1.82 ms against onnxruntime's 1.35.
    Every other round runs the engines in reverse order: a block's speed can depend on which engine
    ran just before it (whose data it finds in the caches).
    ``repeat``/``warmup`` may be per-name mappings (fewer repeats for a slow engine).
    """
    reps = {k: int(repeat[k] if isinstance(repeat, Mapping) else repeat) for k in fns}
    warm = {k: int(warmup[k] if isinstance(warmup, Mapping) else warmup) for k in fns}
    block_warm: dict[str, int] = {}
    for name, fn in fns.items():
        took = []
        for _ in range(max(warm[name], 1)):
            t0 = time.perf_counter()
            fn()
            took.append(time.perf_counter() - t0)
        block_warm[name] = max(1, int(np.ceil(BLOCK_WARMUP_S / max(float(np.min(took)), 1e-6))))
    blocks: dict[str, dict[int, list[float]]] = {k: {} for k in fns}  # name -> round -> samples
    # every other round runs the engines in reverse order, so none always follows the same one
    orders = [list(fns.items()), list(fns.items())[::-1]]
    for r in range(rounds):
        for name, fn in orders[r % 2]:
            share = reps[name] // rounds + (1 if r < reps[name] % rounds else 0)
            if share == 0:
                continue
            time.sleep(BLOCK_PAUSE_S)  # the previous engine's spinning worker threads go idle
            for _ in range(block_warm[name]):  # this engine's threads and data come back
                fn()
            block = blocks[name].setdefault(r, [])
            for _ in range(share):
                t0 = time.perf_counter()
                fn()
                block.append(time.perf_counter() - t0)
    samples = {k: [x for block in by_round.values() for x in block] for k, by_round in blocks.items()}
    return {k: Timing.from_seconds(v, blocks[k]) for k, v in samples.items() if v}


def paired_ratio(ours: Timing, theirs: Timing, level: float = 0.95, resamples: int = 2000) -> dict[str, Any]:
    """Time ratio ``ours / theirs`` from the blocks both engines ran in the same rounds of
    ``time_interleaved``: the median of the per-round ratios, and a bootstrap ``level`` interval of
    that median (rounds resampled with replacement; seeded). A round's two blocks ran seconds apart,
    so a load change on the shared machine moves both; the interval says whether a ratio near 1 is
    distinguishable from parity in this run."""
    common = sorted(set(ours.block_ms) & set(theirs.block_ms))
    n = len(common)
    if n == 0:
        return {"median": ours.median_ms / theirs.median_ms, "ci": None, "rounds": 0}
    r = np.asarray([ours.block_ms[k] / theirs.block_ms[k] for k in common])
    rng = np.random.default_rng(0)
    boot = np.median(r[rng.integers(0, n, size=(resamples, n))], axis=1)
    tail = (1 - level) / 2 * 100
    return {"median": float(np.median(r)), "ci": [float(np.percentile(boot, tail)), float(np.percentile(boot, 100 - tail))],
            "level": level, "rounds": n}


def format_paired(paired: Mapping[str, Any] | None) -> str:
    """``median [lo, hi]`` of a ``paired_ratio`` result, or "-" where no interval was measured."""
    if not paired or not paired.get("ci"):
        return "-"
    return f"{paired['median']:.2f} [{paired['ci'][0]:.2f}, {paired['ci'][1]:.2f}]"


def compare_outputs(got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> dict[str, Any]:
    """Max absolute error and max error relative to the largest |ref| value, over all outputs.

    Raises ValueError when the number of outputs or a shape differs.
    """
    if len(got) != len(ref):
        raise ValueError(f"{len(got)} outputs, onnxruntime gives {len(ref)}")
    max_abs, max_rel = 0.0, 0.0
    for i, (g, r) in enumerate(zip(got, ref)):
        g = np.asarray(g)
        r = np.asarray(r)
        if g.shape != r.shape:
            raise ValueError(f"output {i} has shape {g.shape}, onnxruntime gives {r.shape}")
        if g.size == 0:
            continue
        err = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64))))
        scale = float(np.max(np.abs(r.astype(np.float64))))
        max_abs = max(max_abs, err)
        max_rel = max(max_rel, err / scale if scale > 0 else err)
    finite = all(bool(np.all(np.isfinite(np.asarray(g)))) for g in got)
    return {"max_abs_err": max_abs, "max_rel_err": max_rel, "finite": finite}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:
        return None
    return str(getattr(mod, "__version__", "?"))


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, core count, thread setting, load average and library versions."""
    try:
        load = list(os.getloadavg())
    except OSError:  # pragma: no cover
        load = None
    return {
        "cpu_model": _cpu_model(),
        "cores": default_threads(),
        "threads": threads,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_avg_start": load,
        "versions": {m: _version(m) for m in ("numpy", "onnx", "onnxruntime", "tvm", "portable")},
    }


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON, creating the folder; numpy scalars become numbers."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        return str(o)

    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=default)
        f.write("\n")


def plot_ratios(path: str, ratios: Mapping[str, Mapping[str, float | None]], title: str,
                ylabel: str = "time / onnxruntime time (lower is better)") -> None:
    """Grouped bar chart (log y axis) of per-model ratios, one bar per series; missing values are skipped.

    ``ratios`` maps model name -> {series name (e.g. "portable/ort") -> ratio or None}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(ratios)
    series = sorted({s for r in ratios.values() for s in r})
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(models) + 2), 4.5))
    for i, s in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j, m in enumerate(models) if ratios[m].get(s)]
        ys = [ratios[m][s] for m in models if ratios[m].get(s)]
        bars = ax.bar(xs, ys, width, label=s, color=f"C{i}")
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=1)
        for j, m in enumerate(models):
            if not ratios[m].get(s):  # failed or not run: mark the empty slot
                x = j + (i - (len(series) - 1) / 2) * width
                ax.text(x, 1.0, "n/a", color=f"C{i}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if series:
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned plain-text table."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
