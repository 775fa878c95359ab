"""Training end to end: whole-model gradients, optimizer steps vs numpy, BatchNorm/Dropout in
training mode, ONNX export checked with onnxruntime, and a real learning run (sklearn digits)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_autodiff import numeric_grad

import portable
from portable.optim import SGD, Adam, AdamW
from portable.train import Trainer, grad

F32, F64 = TensorProto.FLOAT, TensorProto.DOUBLE


def build(nodes: list, inputs: dict[str, tuple], output: tuple, params: dict[str, np.ndarray],
          elem: int = F32, opset: int = 17) -> onnx.ModelProto:
    """A model with float graph inputs ``inputs`` (name -> shape), one output and initializers."""
    vis = [helper.make_tensor_value_info(k, elem, s) for k, s in inputs.items()]
    out = helper.make_tensor_value_info(output[0], elem, output[1])
    g = helper.make_graph(nodes, "m", vis, [out], [numpy_helper.from_array(v, k) for k, v in params.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def n(op: str, ins: list[str], outs: list[str], **attrs) -> onnx.NodeProto:  # type: ignore[no-untyped-def]
    """Shorthand for helper.make_node."""
    return helper.make_node(op, ins, outs, **attrs)


def _weighted_sum(model: onnx.ModelProto, shape: tuple, seed: int = 7) -> onnx.ModelProto:
    """``model`` with its output multiplied by a fixed random array (a non-trivial scalar objective)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    out = m.graph.output[0].name
    r = np.random.default_rng(seed).standard_normal(shape)
    m.graph.initializer.append(numpy_helper.from_array(r, "R__"))
    m.graph.node.append(n("Mul", [out, "R__"], ["weighted__"]))
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("weighted__", F64, shape))
    return m


def _check_model_grads(model: onnx.ModelProto, x: np.ndarray, out_shape: tuple, wrt: list[str]) -> None:
    m = _weighted_sum(model, out_shape)
    got = grad(m, [x], wrt=wrt)
    for w in wrt:
        np.testing.assert_allclose(got[w], numeric_grad(m, {"x": x}, w), rtol=1e-5, atol=1e-6, err_msg=w)


def r64(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """float64 random data."""
    return np.random.default_rng(seed).standard_normal(shape) * scale


# ---------------------------------------------------------------------- whole-model gradients


def test_mlp_gradients() -> None:
    p = {"W1": r64(5, 6, seed=1), "b1": r64(6, seed=2), "W2": r64(4, 6, seed=3), "b2": r64(4, seed=4)}
    nodes = [n("MatMul", ["x", "W1"], ["h"]), n("Add", ["h", "b1"], ["h2"]), n("Tanh", ["h2"], ["h3"]),
             n("Gemm", ["h3", "W2", "b2"], ["y"], transB=1, alpha=0.5)]
    m = build(nodes, {"x": (3, 5)}, ("y", (3, 4)), p, F64)
    _check_model_grads(m, r64(3, 5, seed=5), (3, 4), ["W1", "b1", "W2", "b2", "x"])


def test_cnn_batchnorm_gradients() -> None:
    p = {"W": r64(4, 2, 3, 3, seed=1, scale=0.5), "B": r64(4, seed=2), "s": r64(4, seed=3), "bb": r64(4, seed=4),
         "mu": r64(4, seed=5), "var": np.abs(r64(4, seed=6)) + 0.5, "F": r64(4, 3, seed=7)}
    nodes = [n("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             n("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["bn"]), n("Relu", ["bn"], ["r"]),
             n("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
             n("GlobalAveragePool", ["mp"], ["g"]), n("Flatten", ["g"], ["f"]), n("MatMul", ["f", "F"], ["y"])]
    m = build(nodes, {"x": (2, 2, 8, 8)}, ("y", (2, 3)), p, F64)
    _check_model_grads(m, r64(2, 2, 8, 8, seed=8), (2, 3), ["W", "B", "s", "bb", "F"])


def test_residual_block_gradients() -> None:
    p = {"W1": r64(3, 3, 3, 3, seed=1, scale=0.4), "W2": r64(3, 3, 3, 3, seed=2, scale=0.4)}
    nodes = [n("Conv", ["x", "W1"], ["a"], pads=[1, 1, 1, 1]), n("Relu", ["a"], ["b"]),
             n("Conv", ["b", "W2"], ["c"], pads=[1, 1, 1, 1]), n("Add", ["c", "x"], ["d"]), n("Relu", ["d"], ["y"])]
    m = build(nodes, {"x": (1, 3, 5, 5)}, ("y", (1, 3, 5, 5)), p, F64)
    _check_model_grads(m, r64(1, 3, 5, 5, seed=3), (1, 3, 5, 5), ["W1", "W2", "x"])


def test_transformer_encoder_gradients() -> None:
    s, d, h = 4, 6, 2
    p = {k: r64(d, d, seed=i, scale=0.4) for i, k in enumerate(["Wq", "Wk", "Wv", "Wo"])}
    p.update({"W1": r64(d, 8, seed=5, scale=0.4), "W2": r64(8, d, seed=6, scale=0.4), "g1": 1 + r64(d, seed=7) * 0.1,
              "b1": r64(d, seed=8) * 0.1, "g2": 1 + r64(d, seed=9) * 0.1, "b2": r64(d, seed=10) * 0.1,
              "heads": np.array([1, s, h, d // h], dtype=np.int64), "back": np.array([1, s, d], dtype=np.int64),
              "scale": np.array(1 / np.sqrt(d // h))})
    nodes = [n("MatMul", ["x", w], [o]) for w, o in (("Wq", "q"), ("Wk", "k"), ("Wv", "v"))]
    for t in ("q", "k", "v"):
        nodes += [n("Reshape", [t, "heads"], [t + "r"]), n("Transpose", [t + "r"], [t + "t"], perm=[0, 2, 1, 3])]
    nodes += [n("Transpose", ["kt"], ["ktt"], perm=[0, 1, 3, 2]), n("MatMul", ["qt", "ktt"], ["sc"]),
              n("Mul", ["sc", "scale"], ["scs"]), n("Softmax", ["scs"], ["att"], axis=-1),
              n("MatMul", ["att", "vt"], ["ctx"]), n("Transpose", ["ctx"], ["ctxt"], perm=[0, 2, 1, 3]),
              n("Reshape", ["ctxt", "back"], ["ctxr"]), n("MatMul", ["ctxr", "Wo"], ["ao"]),
              n("Add", ["x", "ao"], ["r1"]), n("LayerNormalization", ["r1", "g1", "b1"], ["n1"], axis=-1),
              n("MatMul", ["n1", "W1"], ["f1"]), n("Relu", ["f1"], ["f2"]),
              n("MatMul", ["f2", "W2"], ["f3"]), n("Add", ["n1", "f3"], ["r2"]),
              n("LayerNormalization", ["r2", "g2", "b2"], ["y"], axis=-1)]
    m = build(nodes, {"x": (1, s, d)}, ("y", (1, s, d)), p, F64)
    _check_model_grads(m, r64(1, s, d, seed=11), (1, s, d), ["Wq", "Wk", "Wv", "Wo", "W1", "g1", "b2", "x"])


def test_grad_rejects_unknown_name() -> None:
    m = build([n("Relu", ["x"], ["y"])], {"x": (2,)}, ("y", (2,)), {}, F64)
    with pytest.raises(portable.ModelError, match="nope"):
        grad(m, [np.ones(2)], wrt=["nope"])


# ---------------------------------------------------------------------- optimizers vs numpy


def _linear_model(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    return build([n("Gemm", ["x", "W", "B"], ["y"])], {"x": (8, 3)}, ("y", (8, 2)), {"W": w, "B": b})


def _numpy_linear_mse_grad(x, y, w, b):  # type: ignore[no-untyped-def]
    pred = x @ w + b
    d = 2 * (pred - y) / pred.size
    return x.T @ d, d.sum(0)


def _numpy_reference(opt: str, steps: int, x, y, w, b, **kw):  # type: ignore[no-untyped-def]
    """Independent numpy implementation of the optimizer on the linear least-squares problem."""
    params = [w.astype(np.float64), b.astype(np.float64)]
    state = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    lr = kw["lr"]
    for t in range(1, steps + 1):
        grads = _numpy_linear_mse_grad(x, y, *params)
        for i, (p, g) in enumerate(zip(params, grads)):
            if opt == "sgd":
                g = g + kw["wd"] * p
                state[i][0] = kw["mu"] * state[i][0] + g
                d = g + kw["mu"] * state[i][0] if kw["nesterov"] else state[i][0]
                params[i] = p - lr * d
            else:
                if opt == "adamw":
                    p = p * (1 - lr * kw["wd"])
                else:
                    g = g + kw["wd"] * p
                m = state[i][0] = 0.9 * state[i][0] + 0.1 * g
                v = state[i][1] = 0.999 * state[i][1] + 0.001 * g * g
                params[i] = p - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return params


@pytest.mark.parametrize("name,opt,kw", [
    ("sgd", SGD(lr=0.1, momentum=0.9, weight_decay=0.01), {"lr": 0.1, "mu": 0.9, "wd": 0.01, "nesterov": False}),
    ("sgd", SGD(lr=0.1, momentum=0.8, nesterov=True), {"lr": 0.1, "mu": 0.8, "wd": 0.0, "nesterov": True}),
    ("sgd", SGD(lr=0.2), {"lr": 0.2, "mu": 0.0, "wd": 0.0, "nesterov": False}),
    ("adam", Adam(lr=0.05, weight_decay=0.1), {"lr": 0.05, "wd": 0.1}),
    ("adamw", AdamW(lr=0.05, weight_decay=0.1), {"lr": 0.05, "wd": 0.1}),
])
def test_optimizer_matches_numpy(name: str, opt, kw: dict) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 2)).astype(np.float32)
    w, b = rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    tr = Trainer(_linear_model(w, b), loss="mse", optimizer=opt)
    losses = [tr.step(x, y) for _ in range(4)]
    ref_w, ref_b = _numpy_reference(name, 4, x.astype(np.float64), y.astype(np.float64), w, b, **kw)
    np.testing.assert_allclose(tr.params["W"], ref_w, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(tr.params["B"], ref_b, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(losses[0], np.mean((x @ w + b - y) ** 2), rtol=1e-5)


# ---------------------------------------------------------------------- training-mode layers


def test_batchnorm_training_mode_statistics() -> None:
    rng = np.random.default_rng(1)
    c = 3
    p = {"s": rng.standard_normal(c).astype(np.float32), "bb": rng.standard_normal(c).astype(np.float32),
         "mu": rng.standard_normal(c).astype(np.float32), "var": (rng.random(c) + 0.5).astype(np.float32)}
    m = build([n("BatchNormalization", ["x", "s", "bb", "mu", "var"], ["y"], momentum=0.8, epsilon=1e-3)],
              {"x": (4, c, 2, 2)}, ("y", (4, c, 2, 2)), p)
    x = rng.standard_normal((4, c, 2, 2)).astype(np.float32)
    target = rng.standard_normal((4, c, 2, 2)).astype(np.float32)
    tr = Trainer(m, loss="mse", optimizer=SGD(lr=1e-9))
    loss = tr.step(x, target)
    bmean, bvar = x.mean((0, 2, 3)), x.var((0, 2, 3))
    y = (x - bmean[None, :, None, None]) / np.sqrt(bvar[None, :, None, None] + 1e-3)
    y = y * p["s"][None, :, None, None] + p["bb"][None, :, None, None]
    np.testing.assert_allclose(loss, np.mean((y - target) ** 2), rtol=1e-4)
    np.testing.assert_allclose(tr.params["mu"], 0.8 * p["mu"] + 0.2 * bmean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tr.params["var"], 0.8 * p["var"] + 0.2 * bvar, rtol=1e-5, atol=1e-6)


def test_dropout_training_mode() -> None:
    w = np.eye(64, dtype=np.float32)
    m = build([n("Dropout", ["x", "ratio"], ["d"], seed=3), n("MatMul", ["d", "W"], ["y"])],
              {"x": (16, 64)}, ("y", (16, 64)), {"W": w, "ratio": np.array(0.25, dtype=np.float32)})
    x = np.ones((16, 64), np.float32)
    tr = Trainer(m, loss="mse", optimizer=SGD(lr=0.5))
    tr.step(x, np.zeros((16, 64), np.float32))
    # d loss / d W = d^T (2 y / size); with W = I: y = d, so W moves by -lr * 2 d^T d / size
    delta = (w - tr.params["W"]) * (16 * 64) / (2 * 0.5)
    kept = np.diag(delta) * (0.75 ** 2)  # = number of rows in which each unit was kept
    assert 0.6 < kept.sum() / (16 * 64) < 0.9  # about 1 - ratio of the units were kept
    assert np.allclose(kept, np.round(kept), atol=1e-3)
    before = tr.params["W"].copy()
    tr.step(x, np.zeros((16, 64), np.float32))
    kept2 = np.diag(before - tr.params["W"])
    assert not np.allclose(kept2 / kept2.max(), np.diag(delta) / np.diag(delta).max())  # a new mask each step


# ---------------------------------------------------------------------- export and a real learning run


def _digits_cnn(rng: np.random.Generator) -> onnx.ModelProto:
    def he(*s: int) -> np.ndarray:
        return (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)

    p = {"W1": he(16, 1, 3, 3), "B1": np.zeros(16, np.float32), "s1": np.ones(16, np.float32),
         "b1": np.zeros(16, np.float32), "m1": np.zeros(16, np.float32), "v1": np.ones(16, np.float32),
         "W2": he(32, 16, 3, 3), "B2": np.zeros(32, np.float32), "F": he(10, 32 * 2 * 2),
         "Fb": np.zeros(10, np.float32)}
    nodes = [n("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             n("BatchNormalization", ["c1", "s1", "b1", "m1", "v1"], ["n1"]), n("Relu", ["n1"], ["r1"]),
             n("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]), n("Relu", ["c2"], ["r2"]),
             n("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]), n("Flatten", ["p2"], ["f"]),
             n("Gemm", ["f", "F", "Fb"], ["y"], transB=1)]
    return build(nodes, {"x": ("N", 1, 8, 8)}, ("y", ("N", 10)), p)


def test_digits_cnn_learns_and_exports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]
    tr = Trainer(_digits_cnn(rng), loss="cross_entropy", optimizer=Adam(lr=3e-3))
    batch = 50
    for _ in range(4):
        perm = rng.permutation(train)
        for i in range(0, len(perm) - batch + 1, batch):
            tr.step(x[perm[i:i + batch]], y[perm[i:i + batch]])
    path = str(tmp_path / "digits.onnx")
    tr.export_onnx(path)
    exported = onnx.load(path)
    onnx.checker.check_model(exported, full_check=True)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"x": x[test]})[0]
    acc = float((logits.argmax(1) == y[test]).mean())
    assert acc >= 0.95, f"held-out accuracy {acc:.3f}"
    ours = tr.predict(x[test])[0]
    np.testing.assert_allclose(ours, logits, rtol=1e-3, atol=1e-3)
    # the exported graph is the original one with updated initializers
    assert [nd.op_type for nd in exported.graph.node] == [nd.op_type for nd in tr.proto.graph.node]


def test_model_computed_loss_by_name() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 1)).astype(np.float32)
    nodes = [n("MatMul", ["x", "W"], ["p"]), n("Sub", ["p", "t"], ["d"]), n("Mul", ["d", "d"], ["sq"]),
             n("ReduceMean", ["sq"], ["loss"], keepdims=0)]
    m = build(nodes, {"x": (16, 3), "t": (16, 1)}, ("loss", ()), {"W": w})
    x = rng.standard_normal((16, 3)).astype(np.float32)
    t = (x @ np.array([[1.0], [-2.0], [0.5]])).astype(np.float32)
    tr = Trainer(m, loss="loss", optimizer=SGD(lr=0.1, momentum=0.5))
    losses = [tr.step(x, t) for _ in range(60)]
    assert losses[-1] < 1e-3 * losses[0]
    np.testing.assert_allclose(tr.params["W"].ravel(), [1.0, -2.0, 0.5], atol=0.02)


def test_train_command_fits_a_linear_classifier(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`portable train` on a separable 2-class problem: the exported model classifies it (onnxruntime)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from portable.cli import main as cli_main

    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    w = numpy_helper.from_array(np.zeros((4, 2), np.float32), "fc.weight")
    b = numpy_helper.from_array(np.zeros(2, np.float32), "fc.bias")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["logits"])], "lin",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [32, 2])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path, data, out = tmp_path / "lin.onnx", tmp_path / "d.npz", tmp_path / "lin.trained.onnx"
    onnx.save(model, str(path))
    np.savez(data, x=x, y=y)
    assert cli_main(["train", str(path), "--data", str(data), "--epochs", "3", "--batch", "32",
                     "--lr", "0.05", "-o", str(out)]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pred = np.concatenate([sess.run(None, {"x": x[i:i + 32]})[0].argmax(1) for i in range(0, 256, 32)])
    assert (pred == y).mean() > 0.9
