"""The built-in example: a small CNN classifier built with onnx.helper, compiled, run and checked."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def demo_model(seed: int = 0) -> onnx.ModelProto:
    """A small image classifier (conv-BN-relu, max pool, residual conv block, global pool, Gemm, softmax)."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int, scale: float | None = None) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        s = scale if scale is not None else np.sqrt(2.0 / fan_in)
        return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    inits = [w("c1_w", 32, 3, 3, 3), w("c1_b", 32, scale=0.1),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 32).astype(np.float32), "bn_scale"),
             numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(np.float32), "bn_bias"),
             numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(np.float32), "bn_mean"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 32).astype(np.float32), "bn_var"),
             w("c2_w", 32, 32, 3, 3), w("c2_b", 32, scale=0.1),
             w("c3_w", 64, 32, 1, 1), w("fc_w", 10, 64), w("fc_b", 10, scale=0.1)]
    nodes = [
        helper.make_node("Conv", ["image", "c1_w", "c1_b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn1"],
                         name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "c2_w", "c2_b"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "p1"], ["res"], name="residual"),
        helper.make_node("Relu", ["res"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "c3_w"], ["c3"], name="conv3_1x1"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(nodes, "portable_demo_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="portable-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _median_ms(fn: Any, repeat: int = 30, warmup: int = 5) -> float:
    """Median ms of ``repeat`` calls after ``warmup``, starting after a 200 ms pause so the other
    engine's worker threads have stopped spinning (see benchmarks/common.py)."""
    time.sleep(0.2)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def run_demo(target: str = "host", echo: Any = print) -> dict[str, Any]:
    """Compile the demo model, check it against onnx's reference evaluator, time it beside onnxruntime."""
    import portable
    from onnx.reference import ReferenceEvaluator

    from .targets import resolve_target

    model = demo_model()
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    tgt = resolve_target(target)
    echo(f"target: {tgt.name} -> {tgt.tvm_target}")
    t0 = time.perf_counter()
    exe = portable.compile(model, target=target)
    echo(f"compiled {len(model.graph.node)} ONNX nodes into {exe.num_kernels} kernels "
         f"in {time.perf_counter() - t0:.2f} s")
    got = exe.run(x)[0]
    want = ReferenceEvaluator(model).run(None, {"image": x})[0]
    err = float(np.abs(got - want).max())
    ok = bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))
    echo(f"max |portable - onnx reference| = {err:.2e}  ->  {'OK' if ok else 'MISMATCH'}")
    result: dict[str, Any] = {"max_abs_error": err, "matches_reference": ok}
    result["portable_ms"] = _median_ms(lambda: exe.run(x))
    try:
        import onnxruntime as ort
    except ImportError:
        echo(f"portable: {result['portable_ms']:.3f} ms (onnxruntime not installed)")
    else:
        opts = ort.SessionOptions()
        from .targets import host_cores

        opts.intra_op_num_threads = host_cores()
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        result["onnxruntime_ms"] = _median_ms(lambda: sess.run(None, {"image": x}))
        echo(f"median latency: portable {result['portable_ms']:.3f} ms | onnxruntime "
             f"{result['onnxruntime_ms']:.3f} ms | ratio {result['portable_ms'] / result['onnxruntime_ms']:.2f}x")
    if not ok:
        raise portable.PortableError("demo output does not match the ONNX reference evaluator")
    return result
