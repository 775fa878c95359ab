"""After tuning: kernels and models against their competitors, in the same run.

* Kernels: MatMul 1024^3 (both operands at run time) against numpy/OpenBLAS; the ResNet-18 conv
  layers (batch 1, bias + ReLU) against onnxruntime, two ways: the layer as a whole ONNX model
  (NCHW in and out, so each engine's conversions to and from its blocked layout are included), and
  the operator alone (portable's compute kernels against onnxruntime's compute nodes, each timed
  inside whole runs by its own profiler, layout conversions excluded and reported apart), which is
  what the layer costs inside a network. GFLOPS and % of the FMA peak (measured in the same run,
  ``fma_peak.py``) are reported.
* Models: ResNet-18, MobileNetV2 and the BERT-style encoder from ``models.py`` against
  onnxruntime, untuned (template defaults) and tuned, with the tuning wall time.

Everything is tuned with ``portable.tune`` into ``--log`` (the shipped log for this machine kind,
by default), then compiled with and without that log and timed interleaved with the competitor.

    python benchmarks/bench_tuned.py --budget-model 10m --budget-kernel 90s --out benchmarks/results/tuned.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    default_threads,
    format_paired,
    format_table,
    machine_info,
    ort_session,
    paired_ratio,
    plot_ratios,
    set_threads,
    time_interleaved,
    write_json,
)
from fma_peak import HOW as FMA_PEAK_HOW  # noqa: E402
from fma_peak import measured_fma_peak_gflops  # noqa: E402

#: ResNet-18 convolutions at batch 1: (name, in_c, out_c, hw, k, stride)
RESNET18_CONVS = [
    ("conv1_7x7_s2", 3, 64, 224, 7, 2), ("l1_3x3", 64, 64, 56, 3, 1), ("l2_3x3_s2", 64, 128, 56, 3, 2),
    ("l2_3x3", 128, 128, 28, 3, 1), ("l3_3x3", 256, 256, 14, 3, 1), ("l4_3x3", 512, 512, 7, 3, 1),
    ("l3_ds_1x1_s2", 128, 256, 28, 1, 2),
]


def fma_peak_formula_gflops(threads: int, target: str = "host") -> tuple[float, str]:
    """The textbook FMA peak: cores x cpuinfo GHz x FMA units (assumed 2) x fp32 lanes x 2 flops.
    Reported beside the measured one (``fma_peak.py``), which the percentages use: cpuinfo gives
    the nominal clock, and not every core issues two full-width FMAs per cycle (Zen 4: one zmm)."""
    from portable.targets import resolve_target

    mhz = 0.0
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    lanes = resolve_target(target).vector_lanes_f32
    peak = threads * mhz / 1e3 * 2 * lanes * 2
    return peak, f"{threads} cores x {mhz / 1e3:.2f} GHz x 2 FMA units x {lanes} lanes x 2 flops (assumed 2 units)"


def conv_out_side(hw: int, k: int, stride: int) -> int:
    """Output height (= width) of a square ``k`` x ``k`` convolution padded by ``k // 2``."""
    return (hw + 2 * (k // 2) - k) // stride + 1


def conv_flops(cin: int, cout: int, hw: int, k: int, stride: int) -> float:
    """Multiply-adds x 2 of one such convolution at batch 1."""
    return 2.0 * cout * conv_out_side(hw, k, stride) ** 2 * cin * k * k


def conv_model(cin: int, cout: int, hw: int, k: int, stride: int) -> Any:
    """One Conv (+bias) + Relu, random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4, strides=[stride] * 2),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def matmul_model(n: int) -> Any:
    """MatMul with both operands as runtime inputs (as numpy sees them)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds_for(model: Any) -> dict[str, np.ndarray]:
    """Random inputs for every graph input."""
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(1)
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input if i.name not in inits}


def ort_run(model: Any, threads: int) -> Any:
    """An onnxruntime session's run function."""
    sess = ort_session(model, threads)
    return lambda feeds: sess.run(None, feeds)


#: kernels and onnxruntime nodes that only convert between NCHW and the blocked layout
LAYOUT_KERNELS = ("tonchwc", "fromnchwc")
LAYOUT_NODES = ("ReorderInput", "ReorderOutput")


#: untimed runs before the per-operator timings, onnxruntime's (profiled) and portable's alike
OPERATOR_WARMUP_RUNS = 10


def ort_node_ms(model: Any, feeds: dict[str, np.ndarray], threads: int, repeat: int) -> dict[str, float]:
    """onnxruntime's own per-node times (its profiler, median over ``repeat`` runs after
    ``OPERATOR_WARMUP_RUNS`` warm-up runs), keyed ``"<node>:<op type>"``: the time each operator takes inside a run."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        sess = ort_session(model, threads, profile_prefix=os.path.join(tmp, "ort"))
        for _ in range(OPERATOR_WARMUP_RUNS + repeat):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    per_node: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = f"{e['name'][:-len('_kernel_time')]}:{e['args'].get('op_name')}"
            per_node.setdefault(key, []).append(e["dur"] / 1e3)
    return {k: float(np.median(v[OPERATOR_WARMUP_RUNS:] or v)) for k, v in per_node.items()}


def operator_times(exe: Any, model: Any, feeds: dict[str, np.ndarray], threads: int, repeat: int,
                   rounds: int = 3) -> dict[str, Any]:
    """The layer's operator alone, both engines in their own layouts: portable's compute kernels
    (each kernel timed inside a sequence of whole runs, ``Executable.profile``) against
    onnxruntime's compute nodes (its profiler), layout conversions excluded on both sides and
    reported apart. Alternates the engines over ``rounds`` and keeps the median round. Both engines
    get ``OPERATOR_WARMUP_RUNS`` untimed runs first (after the pause, see ``common.time_interleaved``)."""
    ours, theirs, ours_layout, theirs_layout = [], [], [], []
    args = [feeds[n] for n in exe.input_names]
    for _ in range(rounds):
        time.sleep(0.2)
        prof = exe.profile(*args, repeat=repeat, warmup=OPERATOR_WARMUP_RUNS)
        ours.append(sum(t for k, t in prof if not k.endswith(LAYOUT_KERNELS)) * 1e3)
        ours_layout.append(sum(t for k, t in prof if k.endswith(LAYOUT_KERNELS)) * 1e3)
        time.sleep(0.2)
        nodes = ort_node_ms(model, feeds, threads, repeat)
        theirs.append(sum(t for k, t in nodes.items() if not k.endswith(LAYOUT_NODES)))
        theirs_layout.append(sum(t for k, t in nodes.items() if k.endswith(LAYOUT_NODES)))
    med = lambda v: float(np.median(v))  # noqa: E731
    return {"operator_ms": med(ours), "onnxruntime_operator_ms": med(theirs),
            "operator_vs_onnxruntime": med(ours) / med(theirs),
            "layout_ms": med(ours_layout), "onnxruntime_layout_ms": med(theirs_layout)}


def bench_one(name: str, model: Any, budget: str, log: str, threads: int, repeat: int,
              competitor: str = "onnxruntime", flops: float | None = None,
              previous: dict[str, Any] | None = None, per_operator: bool = False,
              rounds: int = 10, target: str = "host") -> dict[str, Any]:
    """Tune ``model`` (unless ``previous`` holds an earlier run's tuning figures, which are kept),
    then time untuned, tuned and the competitor in alternating blocks over ``rounds`` rounds
    (``per_operator``: also the operator alone against onnxruntime's node, see ``operator_times``)."""
    import portable

    feeds = feeds_for(model)
    if previous is not None:
        summary, tune_s = {"trials": previous.get("trials")}, previous.get("tune_s")
    else:
        t0 = time.perf_counter()
        summary = portable.tune(model, target=target, budget=budget, log=log, progress=False)
        tune_s = time.perf_counter() - t0
    untuned = portable.compile(model, target=target, use_tuning_logs=False, cache=False)
    tuned = portable.compile(model, target=target, use_tuning_logs=True, cache=False)
    engines = {"untuned": lambda: untuned.run(**feeds), "tuned": lambda: tuned.run(**feeds)}
    if competitor == "numpy":
        a, b = feeds["a"], feeds["b"]
        other = lambda: a @ b  # noqa: E731
        ref = [a @ b]
        # the kernel alone (inputs bound once): run() also copies the two 4 MiB inputs, which numpy's
        # arrays do not start 64-byte aligned for, into the executable's aligned buffers
        tuned.bind(**feeds)
        engines["tuned_kernel"] = tuned.launch
    else:
        ort = ort_run(model, threads)
        other = lambda: ort(feeds)  # noqa: E731
        ref = ort(feeds)
    err = max(float(np.abs(g - r).max()) for g, r in zip(tuned.run(**feeds), ref))
    t = time_interleaved({**engines, competitor: other}, repeat, warmup=3, rounds=rounds)
    out = {"tune_s": tune_s, "trials": summary.get("trials"), "max_abs_err_vs_" + competitor: err,
           **{f"{k}_ms": v.median_ms for k, v in t.items()},
           "tuned_vs_" + competitor: t["tuned"].median_ms / t[competitor].median_ms,
           "untuned_vs_" + competitor: t["untuned"].median_ms / t[competitor].median_ms,
           # per-round ratios: their median and its 95% bootstrap interval (common.paired_ratio)
           "tuned_vs_" + competitor + "_paired": paired_ratio(t["tuned"], t[competitor])}
    if per_operator:
        out.update(operator_times(tuned, model, feeds, threads, repeat))
    if "tuned_kernel" in t:
        out["tuned_kernel_vs_" + competitor] = t["tuned_kernel"].median_ms / t[competitor].median_ms
    if flops:
        out["gflops"] = {k: flops / (v.median_ms * 1e-3) / 1e9 for k, v in t.items()}
        if per_operator:
            out["gflops"]["operator"] = flops / (out["operator_ms"] * 1e-3) / 1e9
            out["gflops"]["onnxruntime_operator"] = flops / (out["onnxruntime_operator_ms"] * 1e-3) / 1e9
    print(f"{name}: {out}", flush=True)
    return out


def _interval(result: dict[str, Any]) -> str:
    """`` (per round m [lo, hi])``: median of the tuned/competitor per-round ratios and its 95% interval."""
    paired = result.get("tuned_vs_onnxruntime_paired", result.get("tuned_vs_numpy_paired"))
    return f" (per round {format_paired(paired)})" if paired and paired.get("ci") else ""


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet18,mobilenet_v2,transformer")
    p.add_argument("--kernels", default="matmul,convs")
    p.add_argument("--budget-model", default="10m")
    p.add_argument("--budget-kernel", default="90s")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--rounds", type=int, default=10,
                   help="alternating timing rounds the repeats are spread over (see common.time_interleaved)")
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--target", default="host",
                   help="portable's target (x86-avx2: AVX2 code on an AVX-512 host, with its own shipped log)")
    p.add_argument("--log", default=None, help="tuning log (default: the shipped log for this target)")
    p.add_argument("--out", default="benchmarks/results/tuned.json")
    p.add_argument("--no-tune", action="store_true",
                   help="re-time only, using the log as it is and the tuning figures already in --out")
    args = p.parse_args(argv)
    import json

    old: dict[str, Any] = {}
    if args.no_tune and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)

    def prev(section: str, name: str) -> dict[str, Any] | None:
        return old.get(section, {}).get(name, {}) if args.no_tune else None

    set_threads(args.threads)
    from models import get_model  # noqa: E402

    from portable.targets import resolve_target
    from portable.tune.records import shipped_log_path

    log = args.log or shipped_log_path(resolve_target(args.target))
    formula_peak, peak_how = fma_peak_formula_gflops(args.threads, args.target)
    peak = measured_fma_peak_gflops(args.threads, args.target)
    result: dict[str, Any] = {"machine": machine_info(args.threads), "fma_peak_gflops": peak,
                              "fma_peak_how": FMA_PEAK_HOW,
                              "fma_peak_formula_gflops": formula_peak, "peak_formula": peak_how,
                              "target": resolve_target(args.target).key, "log": log,
                              "config": {"repeat": args.repeat, "rounds": args.rounds, "threads": args.threads},
                              "kernels": {}, "models": {}}
    kernels = [k for k in args.kernels.split(",") if k]
    if "matmul" in kernels:
        result["kernels"]["matmul_1024"] = bench_one("matmul_1024", matmul_model(1024), args.budget_kernel, log,
                                                     args.threads, args.repeat, "numpy", 2 * 1024 ** 3,
                                                     previous=prev("kernels", "matmul_1024"), rounds=args.rounds,
                                                     target=args.target)
    if "convs" in kernels:
        for name, cin, cout, hw, k, s in RESNET18_CONVS:
            flops = conv_flops(cin, cout, hw, k, s)
            result["kernels"][name] = bench_one(name, conv_model(cin, cout, hw, k, s), args.budget_kernel, log,
                                                args.threads, args.repeat, flops=flops,
                                                previous=prev("kernels", name), per_operator=True,
                                                rounds=args.rounds, target=args.target)
        write_json(args.out, result)
    for name in [m for m in args.models.split(",") if m]:
        result["models"][name] = bench_one(name, get_model(name), args.budget_model, log, args.threads, args.repeat,
                                           previous=prev("models", name), rounds=args.rounds,
                                           target=args.target)
        write_json(args.out, result)
    for k in result["kernels"].values():
        if "gflops" in k:
            k["tuned_pct_of_peak"] = 100 * k["gflops"]["tuned"] / peak
            if "operator" in k["gflops"]:
                k["operator_pct_of_peak"] = 100 * k["gflops"]["operator"] / peak
                k["onnxruntime_operator_pct_of_peak"] = 100 * k["gflops"]["onnxruntime_operator"] / peak
    write_json(args.out, result)
    rows = [[n, f"{r.get('untuned_ms', 0):.3f}", f"{r.get('tuned_ms', 0):.3f}",
             f"{r.get('onnxruntime_ms', r.get('numpy_ms', 0)):.3f}",
             f"{r.get('tuned_vs_onnxruntime', r.get('tuned_vs_numpy', 0)):.2f}" + _interval(r),
             f"{r['operator_ms']:.3f} / {r['onnxruntime_operator_ms']:.3f} = {r['operator_vs_onnxruntime']:.2f}"
             if "operator_ms" in r else "-",
             f"{r['gflops']['tuned']:.1f}" if "gflops" in r else "-",
             f"{r.get('tuned_pct_of_peak', 0):.0f}%" if "gflops" in r else "-",
             f"{r['operator_pct_of_peak']:.0f}% / {r['onnxruntime_operator_pct_of_peak']:.0f}%"
             if "operator_pct_of_peak" in r else "-",
             f"{r['tune_s']:.0f}" if r.get("tune_s") else "-"]
            for n, r in {**result["kernels"], **result["models"]}.items()]
    print(format_table(["workload", "untuned ms", "tuned ms", "competitor ms", "tuned/competitor (per-round median [95% CI])",
                        "operator ms (portable / ORT = ratio)", "GFLOPS", "% peak", "operator % peak (portable / ORT)",
                        "tune s"], rows))
    plot_ratios(os.path.splitext(args.out)[0] + ".png",
                {n: {"untuned": r.get("untuned_vs_onnxruntime", r.get("untuned_vs_numpy")),
                     "tuned": r.get("tuned_vs_onnxruntime", r.get("tuned_vs_numpy")),
                     "operator alone": r.get("operator_vs_onnxruntime", r.get("tuned_kernel_vs_numpy"))}
                 for n, r in {**result["kernels"], **result["models"]}.items()},
                "portable / competitor (onnxruntime; numpy for matmul), same run", "time ratio (lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
