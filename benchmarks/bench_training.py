"""Training-step time of portable vs torch eager (same thread count): MLP, small CNN, ResNet-18 (batch 8).

torch is optional: without it only portable is timed. Writes benchmarks/results/training.json and
training.png. Usage: python benchmarks/bench_training.py [--models mlp cnn resnet18] [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_interleaved  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def _he(rng: np.random.Generator, *s: int) -> np.ndarray:
    return (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)


def _model(nodes: list, x_shape: tuple, out: str, params: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, (x_shape[0], 10))],
                          [numpy_helper.from_array(v, k) for k, v in params.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def mlp(batch: int) -> tuple[onnx.ModelProto, tuple, int]:
    """784-256-256-10 ReLU MLP."""
    rng = np.random.default_rng(0)
    p = {"W1": _he(rng, 256, 784), "b1": np.zeros(256, np.float32), "W2": _he(rng, 256, 256),
         "b2": np.zeros(256, np.float32), "W3": _he(rng, 10, 256), "b3": np.zeros(10, np.float32)}
    n = helper.make_node
    nodes = [n("Gemm", ["x", "W1", "b1"], ["h1"], transB=1), n("Relu", ["h1"], ["r1"]),
             n("Gemm", ["r1", "W2", "b2"], ["h2"], transB=1), n("Relu", ["h2"], ["r2"]),
             n("Gemm", ["r2", "W3", "b3"], ["y"], transB=1)]
    return _model(nodes, (batch, 784), "y", p), (batch, 784), 10


def _conv_bn_relu(nodes: list, p: dict, rng: np.random.Generator, name: str, x: str, cin: int, cout: int,
                  stride: int = 1, k: int = 3, relu: bool = True) -> str:
    n = helper.make_node
    p[f"{name}.w"] = _he(rng, cout, cin, k, k)
    for s, v in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)):
        p[f"{name}.{s}"] = np.full(cout, v, np.float32)
    nodes += [n("Conv", [x, f"{name}.w"], [f"{name}.c"], pads=[k // 2] * 4, strides=[stride, stride]),
              n("BatchNormalization", [f"{name}.c"] + [f"{name}.{s}" for s in "sbmv"], [f"{name}.bn"])]
    if not relu:
        return f"{name}.bn"
    nodes.append(n("Relu", [f"{name}.bn"], [f"{name}.r"]))
    return f"{name}.r"


def cnn(batch: int) -> tuple[onnx.ModelProto, tuple, int]:
    """Two conv-BN-ReLU blocks, max pool, linear head on 3x32x32."""
    rng = np.random.default_rng(0)
    nodes: list = []
    p: dict = {}
    h = _conv_bn_relu(nodes, p, rng, "c1", "x", 3, 16)
    h = _conv_bn_relu(nodes, p, rng, "c2", h, 16, 32, stride=2)
    n = helper.make_node
    p["F"], p["Fb"] = _he(rng, 10, 32 * 8 * 8), np.zeros(10, np.float32)
    nodes += [n("MaxPool", [h], ["mp"], kernel_shape=[2, 2], strides=[2, 2]), n("Flatten", ["mp"], ["f"]),
              n("Gemm", ["f", "F", "Fb"], ["y"], transB=1)]
    return _model(nodes, (batch, 3, 32, 32), "y", p), (batch, 3, 32, 32), 10


def resnet18(batch: int) -> tuple[onnx.ModelProto, tuple, int]:
    """ResNet-18 (BasicBlocks [2, 2, 2, 2]) on 3x64x64, 10 classes."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes: list = []
    p: dict = {}
    h = _conv_bn_relu(nodes, p, rng, "stem", "x", 3, 64, k=3)
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for blk in range(2):
            stride = 2 if blk == 0 and stage > 0 else 1
            name = f"l{stage}.{blk}"
            a = _conv_bn_relu(nodes, p, rng, f"{name}.a", h, cin, cout, stride)
            b = _conv_bn_relu(nodes, p, rng, f"{name}.b", a, cout, cout, relu=False)
            skip = h if stride == 1 and cin == cout else _conv_bn_relu(nodes, p, rng, f"{name}.d", h, cin, cout,
                                                                     stride, k=1, relu=False)
            nodes += [n("Add", [b, skip], [f"{name}.sum"]), n("Relu", [f"{name}.sum"], [f"{name}.out"])]
            h, cin = f"{name}.out", cout
    p["F"], p["Fb"] = _he(rng, 10, 512), np.zeros(10, np.float32)
    nodes += [n("GlobalAveragePool", [h], ["gap"]), n("Flatten", ["gap"], ["f"]),
              n("Gemm", ["f", "F", "Fb"], ["y"], transB=1)]
    return _model(nodes, (batch, 3, 64, 64), "y", p), (batch, 3, 64, 64), 10


MODELS: dict[str, Callable[[int], tuple]] = {"mlp": mlp, "cnn": cnn, "resnet18": resnet18}
BATCH = 8
THREADS = 2


def _time(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``repeat`` calls after ``warmup`` calls (benchmarks/common.py)."""
    return time_interleaved({"step": fn}, repeat, warmup, rounds=1)["step"].median_ms / 1e3


def bench_portable(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, repeat: int) -> tuple[float, float]:
    """(compile seconds, median step seconds) with SGD momentum."""
    import portable
    from portable.optim import SGD
    from portable.train import Trainer

    del portable
    tr = Trainer(model, loss="cross_entropy", optimizer=SGD(lr=0.01, momentum=0.9))
    t = time.perf_counter()
    tr.step(x, y)
    compile_s = time.perf_counter() - t
    return compile_s, _time(lambda: tr.step(x, y), repeat)


def bench_torch(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, repeat: int) -> float | None:
    """Median step seconds of the same network in torch eager (None when torch is missing)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    inits = {i.name: torch.tensor(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    params = [v.requires_grad_() for k, v in inits.items() if k.endswith((".w", ".s", ".b")) or k[0] in "WbF"]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    xt, yt = torch.tensor(x), torch.tensor(y)

    def forward() -> Any:
        env = {"x": xt}
        for nd in model.graph.node:
            a = [env.get(i, inits.get(i)) for i in nd.input]
            attrs = {at.name: helper.get_attribute_value(at) for at in nd.attribute}
            op = nd.op_type
            if op == "Gemm":
                out = a[0] @ (a[1].T if attrs.get("transB") else a[1]) + a[2]
            elif op == "Conv":
                out = torch.nn.functional.conv2d(a[0], a[1], a[2] if len(a) > 2 else None,
                                                 stride=attrs.get("strides", [1, 1]), padding=attrs["pads"][0])
            elif op == "BatchNormalization":
                out = torch.nn.functional.batch_norm(a[0], a[3], a[4], a[1], a[2], training=True)
            elif op == "Relu":
                out = torch.relu(a[0])
            elif op == "Add":
                out = a[0] + a[1]
            elif op == "MaxPool":
                out = torch.nn.functional.max_pool2d(a[0], attrs["kernel_shape"], attrs["strides"])
            elif op == "GlobalAveragePool":
                out = a[0].mean((2, 3), keepdim=True)
            elif op == "Flatten":
                out = a[0].flatten(1)
            else:
                raise NotImplementedError(op)
            env[nd.output[0]] = out
        return env[model.graph.output[0].name]

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(forward(), yt).backward()
        opt.step()

    return _time(step, repeat)


def main() -> None:
    """Run the benchmark and write JSON + PNG."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("PORTABLE_NO_CACHE", "1")
    os.environ["TVM_NUM_THREADS"] = str(THREADS)
    rows = []
    for name in args.models:
        model, xshape, classes = MODELS[name](BATCH)
        rng = np.random.default_rng(1)
        x = rng.standard_normal(xshape).astype(np.float32)
        y = rng.integers(0, classes, xshape[0]).astype(np.int64)
        compile_s, ours = bench_portable(model, x, y, args.repeat)
        theirs = bench_torch(model, x, y, args.repeat)
        rows.append({"model": name, "batch": BATCH, "portable_step_ms": ours * 1e3,
                     "portable_compile_s": compile_s, "torch_step_ms": None if theirs is None else theirs * 1e3,
                     "ratio": None if theirs is None else ours / theirs})
        print(json.dumps(rows[-1]))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "training.json"), "w") as f:
        json.dump({"threads": THREADS, "statistic": f"median of {args.repeat} after 3 warm-up steps",
                   "results": rows}, f, indent=2)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["portable_step_ms"] for r in rows], 0.4, label="portable")
    ax.bar(xs + 0.2, [r["torch_step_ms"] or 0 for r in rows], 0.4, label="torch eager")
    ax.set_xticks(xs, [f"{r['model']} (b={r['batch']})" for r in rows])
    ax.set_ylabel("training step (ms)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "training.png"), dpi=120)


if __name__ == "__main__":
    main()
