"""Convolution kernels alone: portable's tuned kernel against onnxruntime's own NCHWc kernel (MLAS).

``bench_tuned.py`` compares operators through onnxruntime's profiler, whose node times add up to
more than its unprofiled run. Here both kernels are called directly, in alternating blocks of the
same run (``common.time_interleaved``), each on the data layout its engine chooses for the layer:

* portable: the layer's convolution step of the compiled one-layer model (shipped tuning log),
  called on its planned buffers (``Executable.step_call``): direct NCHWc, Winograd, or the
  NCHW-input kernel, bias and ReLU fused. A 3x3/2 layer with a 28x28 output is Winograd over the
  input's phases: its phase split (the NCHW -> blocked conversion of that layout) is left out, as
  onnxruntime's input reorder is. The 7x7/2 first layer is Winograd over its phases too, but MLAS
  reads its 3-channel NCHW input directly, so there the phase split is timed with the kernel.
* onnxruntime: a one-node model with the ``com.microsoft.nchwc`` ``Conv`` its graph optimizer puts in
  place of such a layer (MLAS ``MlasNchwcConv``, bias and ReLU fused), run through an IOBinding on
  preallocated values so that only the kernel and the session's dispatch are timed. Its input is
  NCHWc (NCHW for a 3-channel first layer) and its filter is packed as MLAS expects (``OIHWBiBo``, or
  ``OIHWBo`` for an NCHW input): the same layouts as ``portable.ops.blocked.pack_conv_weight``.

The two kernels' outputs (both NCHWc) are compared before anything is timed: a layout or packing
mistake on either side stops the run instead of timing a wrong kernel.

    PORTABLE_NO_CACHE=1 python benchmarks/bench_conv_kernels.py --repeat 60 --rounds 20
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    default_threads,
    format_paired,
    format_table,
    machine_info,
    paired_ratio,
    plot_ratios,
    set_threads,
    time_interleaved,
    write_json,
)

CONV_FAMILIES = ("conv2d_nchwc", "conv2d_winograd_nchwc")


def mlas_conv_session(w: np.ndarray, b: np.ndarray, hw: int, stride: int, block: int, threads: int) -> Any:
    """onnxruntime session of one NCHWc ``Conv`` (bias, ReLU) with MLAS-packed weights."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from bench_tuned import conv_out_side
    from portable.ops.blocked import pack_conv_weight

    cout, cin, k, _ = w.shape
    blocked_input = cin % block == 0
    packed = pack_conv_weight(w, block, blocked_input, depthwise=False).reshape(w.shape)
    oh = conv_out_side(hw, k, stride)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], domain="com.microsoft.nchwc", kernel_shape=[k, k],
                            strides=[stride] * 2, pads=[k // 2] * 4, activation="Relu")
    graph = helper.make_graph([node], "mlas_conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, oh, oh])],
                              [numpy_helper.from_array(packed, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft.nchwc", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the node is already final
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def to_blocked(x: np.ndarray, block: int) -> np.ndarray:
    """NCHW -> NCHWc memory order (channels a multiple of ``block``), kept in NCHW shape."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // block, block, h, w).transpose(0, 1, 3, 4, 2)).reshape(x.shape)


def bench_layer(name: str, cin: int, cout: int, hw: int, k: int, stride: int, threads: int, repeat: int,
                rounds: int) -> dict[str, Any]:
    """Check, then time portable's convolution kernel and MLAS's on one ResNet-18 layer."""
    import onnxruntime as ort
    from onnx import numpy_helper

    import portable
    from bench_tuned import conv_flops, conv_model, feeds_for

    model = conv_model(cin, cout, hw, k, stride)
    x = feeds_for(model)["x"]
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    exe = portable.compile(model, target="host", cache=False)
    block = exe.target.vector_lanes_f32
    steps = [i for i, s in enumerate(exe.plan.steps) if exe.plan.kernels[s["kernel"]]["family"] in CONV_FAMILIES]
    if len(steps) != 1:
        raise RuntimeError(f"{name}: expected one convolution kernel, found {len(steps)}")
    step = exe.plan.steps[steps[0]]
    exe.bind(x=x)
    exe.launch()
    # MLAS reads a few-channel first layer's NCHW input as it is: our kernels before the convolution
    # (the 7x7/2 stem's phase split) count then; otherwise both sides' input reorder is left out
    first = 0 if cin % block else steps[0]
    calls = [exe.step_call(i) for i in range(first, steps[0] + 1)]

    def ours() -> None:
        for call in calls:
            call()

    ours_out = exe.read(step["args"][-1])  # [1, C/cb, OH, OW, cb]

    sess = mlas_conv_session(consts["w"], consts["b"], hw, stride, block, threads)
    x_in = to_blocked(x, block) if cin % block == 0 else x
    io = sess.io_binding()
    io.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x_in))
    y = ort.OrtValue.ortvalue_from_shape_and_type(list(ours_out.shape[:1]) + [cout] + list(ours_out.shape[2:4]),
                                                  np.float32)
    io.bind_ortvalue_output("y", y)
    sess.run_with_iobinding(io)
    theirs_out = y.numpy().reshape(ours_out.shape)
    err = float(np.abs(ours_out - theirs_out).max() / max(np.abs(theirs_out).max(), 1e-6))
    if err > 1e-4:
        raise RuntimeError(f"{name}: portable's kernel and MLAS's disagree (max relative error {err:.2e})")

    t = time_interleaved({"portable": ours, "onnxruntime": lambda: sess.run_with_iobinding(io)}, repeat,
                         warmup=5, rounds=rounds)
    flops = conv_flops(cin, cout, hw, k, stride)
    return {"family": exe.plan.kernels[step["kernel"]]["family"], "knobs": exe.plan.kernels[step["kernel"]]["knobs"],
            "max_rel_err": err, "portable_ms": t["portable"].median_ms, "onnxruntime_ms": t["onnxruntime"].median_ms,
            "portable_p10_ms": t["portable"].p10_ms, "onnxruntime_p10_ms": t["onnxruntime"].p10_ms,
            "portable_vs_onnxruntime": t["portable"].median_ms / t["onnxruntime"].median_ms,
            "portable_vs_onnxruntime_paired": paired_ratio(t["portable"], t["onnxruntime"]),
            "gflops": {"portable": flops / t["portable"].median_ms / 1e6,
                       "onnxruntime": flops / t["onnxruntime"].median_ms / 1e6}}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", default="", help="comma list of layer names (default: all)")
    p.add_argument("--repeat", type=int, default=60)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--out", default="benchmarks/results/conv_kernels.json")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    set_threads(args.threads)
    from bench_tuned import RESNET18_CONVS

    wanted = {n for n in args.layers.split(",") if n}
    result: dict[str, Any] = {"machine": machine_info(args.threads),
                              "config": {"repeat": args.repeat, "rounds": args.rounds, "threads": args.threads},
                              "layers": {}}
    for name, cin, cout, hw, k, s in RESNET18_CONVS:
        if wanted and name not in wanted:
            continue
        print(f"[bench] {name} ...", flush=True)
        result["layers"][name] = bench_layer(name, cin, cout, hw, k, s, args.threads, args.repeat, args.rounds)
        write_json(args.out, result)
    rows = [[n, r["family"], f"{r['portable_ms']:.3f}", f"{r['onnxruntime_ms']:.3f}",
             f"{r['portable_vs_onnxruntime']:.2f}", format_paired(r["portable_vs_onnxruntime_paired"]),
             f"{r['gflops']['portable']:.0f}", f"{r['gflops']['onnxruntime']:.0f}"]
            for n, r in result["layers"].items()]
    print(format_table(["layer", "portable kernel", "portable ms", "MLAS ms", "portable/MLAS", "per-round ratio [95% CI]", "GFLOPS", "MLAS GFLOPS"],
                       rows))
    if not args.no_plot:
        plot_ratios(os.path.splitext(args.out)[0] + ".png",
                    {n: {"portable/MLAS": r["portable_vs_onnxruntime"]} for n, r in result["layers"].items()},
                    "ResNet-18 conv kernels alone: portable vs onnxruntime's MLAS NCHWc kernel",
                    ylabel="time / MLAS kernel time (lower is better)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
