"""Inference benchmark: portable vs onnxruntime vs TVM Relax's default pipeline, on CPU.

Example::

    python benchmarks/bench_inference.py --models resnet18,mobilenet_v2,transformer,light \\
        --repeat 20 --out benchmarks/results/inference.json

Per model, all engines run in one process (a child of this script, so a crash or hang in one model
cannot take the whole run down) with the same thread count; each is compiled, its output checked
against onnxruntime, warmed up, then all are timed interleaved. A failing engine is recorded with
its error message. Results go to the JSON file and a PNG of the time ratios next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import common  # noqa: E402

ENGINES = ("onnxruntime", "portable", "relax")
RunFn = Callable[[], list]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,mobilenet_v2,transformer,light",
                   help="comma list: resnet18, mobilenet_v2, transformer, light (all nine) or light_<name>")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma list from {', '.join(ENGINES)}")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per engine (portable, onnxruntime)")
    p.add_argument("--relax-repeat", type=int, default=3, help="timed runs for the (slow) Relax engine")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per engine first (Relax: 1)")
    p.add_argument("--threads", type=int, default=common.default_threads(),
                   help="threads for every engine (TVM_NUM_THREADS, ORT intra_op_num_threads)")
    p.add_argument("--model-timeout", type=float, default=1800.0, help="seconds allowed per model")
    p.add_argument("--out", default=os.path.join(HERE, "results", "inference.json"))
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one model, write JSON to --child-out
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------- engines
def _err(exc: BaseException) -> str:
    """One-line-ish error message: type, message (first 600 chars) and the innermost frame."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" [at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}]" if tb else ""
    return f"{type(exc).__name__}: {str(exc).strip()[:600]}{where}"


def prepare_onnxruntime(model: Any, feeds: dict, threads: int) -> RunFn:
    """onnxruntime CPUExecutionProvider, all graph optimisations, ``threads`` intra-op threads."""
    sess = common.ort_session(model, threads)
    return lambda: sess.run(None, feeds)


def prepare_portable(model: Any, feeds: dict, threads: int) -> RunFn:
    """``portable.compile(model, target="host")`` (artifact cache off, so compile time is real)."""
    import portable

    exe = portable.compile(model, target="host", cache=False)
    return lambda: exe.run(**feeds)


def relax_target() -> Any:
    """The same host target dict portable uses (real mcpu, so SIMD is enabled) as a tvm Target."""
    import tvm

    from portable.targets import detect_host

    return tvm.target.Target(dict(detect_host().tvm_target))


def prepare_relax(model: Any, feeds: dict, threads: int) -> RunFn:
    """TVM Relax default pipeline: from_onnx -> tvm.compile(Target) -> VirtualMachine (no tuning)."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    shapes = {k: list(v.shape) for k, v in feeds.items()}
    dtypes = {k: str(v.dtype) for k, v in feeds.items()}
    mod = from_onnx(model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    params = [str(p.name) for p in mod["main"].params]
    order = params if set(params) == set(feeds) else list(feeds)  # names may be sanitised: use ONNX order
    ex = tvm.compile(mod, target=relax_target())
    dev = tvm.cpu(0)
    vm = relax.VirtualMachine(ex, dev)
    arrays = [feeds[k] for k in order]

    def run() -> list:
        out = vm["main"](*[tvm.runtime.tensor(a, dev) for a in arrays])
        if hasattr(out, "numpy"):
            return [out.numpy()]
        return [np.asarray(o.numpy()) for o in out]

    return run


PREPARE = {"onnxruntime": prepare_onnxruntime, "portable": prepare_portable, "relax": prepare_relax}


# ---------------------------------------------------------------------------------------- one model
def _save(path: str | None, result: dict) -> None:
    """Persist partial results so the parent keeps them if this process dies."""
    if path:
        common.write_json(path, result)


def _prepare_engine(name: str, model: Any, feeds: dict, threads: int, ref: list | None,
                    entry: dict) -> tuple[RunFn | None, list | None]:
    """Compile ``name``, run it once and check it against ``ref`` (if given); fills ``entry``.

    Returns the run function and the first outputs, or (None, None) on failure.
    """
    t0 = time.perf_counter()
    try:
        fn = PREPARE[name](model, feeds, threads)
    except Exception as exc:
        entry.update(status="error", stage="compile", error=_err(exc),
                     compile_s=round(time.perf_counter() - t0, 3))
        return None, None
    entry["compile_s"] = round(time.perf_counter() - t0, 3)
    try:
        t1 = time.perf_counter()
        outs = fn()
        entry["first_run_ms"] = round((time.perf_counter() - t1) * 1e3, 3)
    except Exception as exc:
        entry.update(status="error", stage="run", error=_err(exc))
        return None, None
    entry["status"] = "ok"
    if ref is not None:
        try:
            entry.update(common.compare_outputs(outs, ref))
        except ValueError as exc:
            entry.update(status="mismatch", check_error=str(exc))
    elif name != "onnxruntime":
        entry["check_error"] = "not checked: onnxruntime failed, so there is no reference output"
    return fn, outs


def bench_model(name: str, engines: list[str], args: argparse.Namespace, partial: str | None = None) -> dict:
    """Compile, check and time every engine on model ``name``; returns its JSON record."""
    import models

    result: dict[str, Any] = {"model": name, "engines": {}}
    t0 = time.perf_counter()
    model = models.get_model(name)
    feeds = models.random_inputs(model)
    result["inputs"] = {k: list(v.shape) for k, v in feeds.items()}
    result["build_s"] = round(time.perf_counter() - t0, 3)
    ref: list | None = None
    fns: dict[str, RunFn] = {}
    order = ["onnxruntime"] + [e for e in engines if e != "onnxruntime"]  # ORT first: it is the reference
    for eng in order:
        entry: dict[str, Any] = {"status": "running"}
        result["engines"][eng] = entry
        result["in_progress"] = {"engine": eng, "stage": "compile/first run"}
        _save(partial, result)
        fn, outs = _prepare_engine(eng, model, feeds, args.threads, ref, entry)
        if eng == "onnxruntime":
            ref = outs
            if eng not in engines:  # used only as the reference
                del result["engines"][eng]
                continue
        if fn is not None:
            fns[eng] = fn
    result["in_progress"] = {"engine": "all", "stage": "timing"}
    _save(partial, result)
    reps = {e: (args.relax_repeat if e == "relax" else args.repeat) for e in fns}
    warm = {e: (min(args.warmup, 1) if e == "relax" else args.warmup) for e in fns}
    for eng, timing in common.time_interleaved(fns, reps, warm).items():
        result["engines"][eng].update(timing.to_dict())
    result.pop("in_progress")
    result["ratios"] = ratios(result)
    return result


def ratios(result: dict) -> dict[str, float | None]:
    """Median-time ratios of each engine against onnxruntime (None where either is missing)."""
    eng = result["engines"]
    base = eng.get("onnxruntime", {}).get("median_ms")
    out: dict[str, float | None] = {}
    for e, short in (("portable", "portable/ort"), ("relax", "relax/ort")):
        med = eng.get(e, {}).get("median_ms")
        out[short] = round(med / base, 4) if med and base else None
    return out


# ---------------------------------------------------------------------------------------- driver
def run_child(name: str, args: argparse.Namespace, timeout: float) -> dict:
    """Benchmark one model in a child process; a crash or timeout becomes an error on the busy engine."""
    fd, path = tempfile.mkstemp(suffix=".json", prefix=f"bench_{name}_")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--child-out", path,
           "--engines", args.engines, "--repeat", str(args.repeat), "--relax-repeat", str(args.relax_repeat),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]
    try:
        proc = subprocess.run(cmd, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        rc, tail = proc.returncode, proc.stdout[-2000:]
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc, tail = None, out[-2000:]
    try:
        with open(path) as f:
            result = json.load(f) if os.path.getsize(path) else {"model": name, "engines": {}}
    finally:
        os.remove(path)
    if rc == 0 and "in_progress" not in result:
        return result
    why = f"timed out after {timeout:.0f} s" if rc is None else f"process exited with code {rc}"
    busy = result.pop("in_progress", {"engine": "all", "stage": "model build"})
    stage = busy["stage"]
    result["crash"] = {"error": f"{why} during {busy['engine']} {stage}", "output_tail": tail}
    engines = result.setdefault("engines", {})
    for entry in engines.values():
        if entry.get("status") == "running" or (stage == "timing" and "median_ms" not in entry):
            entry.update(status="error", stage=stage, error=f"{why} during {stage}")
    for eng in args.engines.split(","):
        if eng and eng not in engines:
            engines[eng] = {"status": "skipped", "error": f"not run: the model's process stopped ({why})"}
    result["ratios"] = ratios(result)
    return result


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(results: dict[str, dict], engines: list[str]) -> str:
    """Render (and print) a summary table: median ms per engine, ratios, compile s, max rel error."""
    header = ["model"] + [f"{e} ms" for e in engines] + ["portable/ort", "relax/ort", "portable compile s",
                                                         "relax compile s", "portable rel err", "relax rel err"]
    rows = []
    for name, r in results.items():
        eng = r.get("engines", {})
        row = [name]
        for e in engines:
            ent = eng.get(e, {})
            row.append(_fmt(ent.get("median_ms")) if ent.get("median_ms") is not None
                       else ent.get("status", "-").upper() if ent else "-")
        rt = r.get("ratios", {})
        row += [_fmt(rt.get("portable/ort")), _fmt(rt.get("relax/ort")),
                _fmt(eng.get("portable", {}).get("compile_s"), ".1f"),
                _fmt(eng.get("relax", {}).get("compile_s"), ".1f"),
                _fmt(eng.get("portable", {}).get("max_rel_err"), ".1e"),
                _fmt(eng.get("relax", {}).get("max_rel_err"), ".1e")]
        rows.append(row)
    table = common.format_table(header, rows)
    print(table)
    errors = [(n, e, ent.get("stage"), ent.get("error") or ent.get("check_error"))
              for n, r in results.items() for e, ent in r.get("engines", {}).items()
              if ent.get("status") not in ("ok", None)]
    for n, e, stage, msg in errors:
        print(f"  {n} / {e} failed" + (f" ({stage})" if stage else "") + f": {msg}")
    return table


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    common.set_threads(args.threads)
    os.environ.setdefault("PORTABLE_NO_CACHE", "1")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise SystemExit(f"unknown engine(s) {bad}; choose from {', '.join(ENGINES)}")
    if args.child:
        result = bench_model(args.child, engines, args, partial=args.child_out)
        common.write_json(args.child_out, result)
        return 0
    import models

    names = models.model_names(args.models)
    report: dict[str, Any] = {
        "benchmark": "inference",
        "machine": common.machine_info(args.threads),
        "config": {"engines": engines, "repeat": args.repeat, "relax_repeat": args.relax_repeat,
                   "warmup": args.warmup, "threads": args.threads, "batch": 1,
                   "timing": "wall clock per run() incl. numpy in/out copies; median/p10/p90 over repeats, "
                             "engines interleaved in one process per model"},
        "models": {},
    }
    try:
        report["config"]["relax_target"] = str(relax_target())
    except Exception as exc:  # noqa: BLE001 - informational only
        report["config"]["relax_target"] = f"unavailable: {_err(exc)}"
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        t0 = time.perf_counter()
        report["models"][name] = run_child(name, args, args.model_timeout)
        report["models"][name]["wall_s"] = round(time.perf_counter() - t0, 1)
        common.write_json(args.out, report)  # keep what we have if a later model is interrupted
    report["machine"]["load_avg_end"] = list(os.getloadavg())
    common.write_json(args.out, report)
    print_table(report["models"], engines)
    if not args.no_plot:
        png = os.path.splitext(args.out)[0] + ".png"
        title = (f"Inference, batch 1, {args.threads} threads, {report['machine']['cpu_model']}\n"
                 "median time relative to onnxruntime (lower is better)")
        common.plot_ratios(png, {n: r.get("ratios", {}) for n, r in report["models"].items()}, title)
        print(f"wrote {args.out} and {png}")
    else:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
