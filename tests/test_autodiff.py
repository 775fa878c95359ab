"""Adjoint rules checked against central finite differences (float64) of onnx's reference evaluator.

Each check builds a one-node model, differentiates ``sum(y * R)`` (R a fixed random array, so
symmetric outputs such as softmax still have a non-trivial gradient) with ``portable.grad``,
and compares with central differences of the same model run by ``onnx.reference``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from portable.train import grad

F64 = TensorProto.DOUBLE


def _model(nodes: list, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], out: str,
           opset: int) -> onnx.ModelProto:
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in inputs.items()]
    initializers = [numpy_helper.from_array(v, k) for k, v in inits.items()]

    def make(shape: Any) -> onnx.ModelProto:
        g = helper.make_graph(nodes, "g", vis, [helper.make_tensor_value_info(out, F64, shape)], initializers)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        return m

    return make(np.shape(ReferenceEvaluator(make(None)).run(None, dict(inputs))[0]))


def numeric_grad(model: onnx.ModelProto, feeds: dict[str, np.ndarray], name: str, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the (summed) first output w.r.t. input or initializer ``name``."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    def f(value: np.ndarray) -> float:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        f_feeds = dict(feeds)
        if name in inits:
            for init in m.graph.initializer:
                if init.name == name:
                    init.CopyFrom(numpy_helper.from_array(value, name))
        else:
            f_feeds[name] = value
        return float(np.sum(ReferenceEvaluator(m).run(None, f_feeds)[0]))

    base = inits[name] if name in inits else feeds[name]
    out = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        hi, lo = base.copy(), base.copy()
        hi[idx] += eps
        lo[idx] -= eps
        out[idx] = (f(hi) - f(lo)) / (2 * eps)
    return out


def check_grad(op: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any] | None = None,
               consts: dict[str, np.ndarray] | None = None, wrt: list[str] | None = None, opset: int = 17,
               n_outputs: int = 1, seed: int = 0, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Gradient of ``sum(op(...)[0] * R)`` by portable vs finite differences, for every ``wrt`` name.

    ``inputs`` are float64 graph inputs; ``consts`` initializers (indices, shapes, or float
    parameters, which may also be in ``wrt``); node inputs are inputs then consts in order.
    """
    consts = consts or {}
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, list(inputs) + list(consts), outs, **(attrs or {}))
    probe = _model([node], inputs, consts, "y0", opset)
    y = ReferenceEvaluator(probe).run(None, inputs)[0]
    r = np.random.default_rng(seed + 99).standard_normal(np.shape(y))
    weight = helper.make_node("Mul", ["y0", "R"], ["z"])
    model = _model([node, weight], inputs, {**consts, "R": np.asarray(r, dtype=y.dtype)}, "z", opset)
    wrt = wrt or list(inputs)
    got = grad(model, inputs, wrt=wrt)
    for name in wrt:
        expected = numeric_grad(model, inputs, name)
        np.testing.assert_allclose(got[name], expected, rtol=rtol, atol=atol, err_msg=f"{op} d/d{name}")


def rnd(*shape: int, seed: int = 0, positive: bool = False) -> np.ndarray:
    """float64 test data (bounded away from 0 when ``positive``)."""
    v = np.random.default_rng(seed + sum(shape)).standard_normal(shape)
    return np.abs(v) + 0.5 if positive else v


# ---------------------------------------------------------------------- elementwise


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1))])
def test_binary_broadcast(op: str, shapes: tuple) -> None:
    a, b = rnd(*shapes[0]), rnd(*shapes[1], seed=1, positive=op == "Div")
    check_grad(op, {"a": a, "b": b})


def test_pow() -> None:
    check_grad("Pow", {"a": rnd(3, 4, positive=True), "b": rnd(4, seed=2)})


UNARY = [
    ("Relu", {}, False), ("Sigmoid", {}, False), ("Tanh", {}, False), ("LeakyRelu", {"alpha": 0.2}, False),
    ("Elu", {"alpha": 0.7}, False), ("Exp", {}, False), ("Log", {}, True),
    ("Sqrt", {}, True), ("Softplus", {}, False), ("Abs", {}, False), ("Neg", {}, False),
    ("Reciprocal", {}, True), ("Sin", {}, False), ("Cos", {}, False), ("Selu", {}, False),
    ("Softsign", {}, False), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, False),
    ("ThresholdedRelu", {"alpha": 0.3}, False),
]


@pytest.mark.parametrize("op,attrs,positive", UNARY, ids=[u[0] for u in UNARY])
def test_unary(op: str, attrs: dict, positive: bool) -> None:
    check_grad(op, {"x": rnd(3, 5, positive=positive)}, attrs)


def _erf_fd(fn, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Central differences of a scalar function built on math.erf (onnx.reference's Erf is float32)."""
    f = np.vectorize(fn)
    return (f(x + eps) - f(x - eps)) / (2 * eps)


def _unary_model(op: str, x: np.ndarray, attrs: dict, opset: int) -> onnx.ModelProto:
    return _model([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": x}, {}, "y", opset)


def test_erf() -> None:
    x = rnd(3, 5)
    got = grad(_unary_model("Erf", x, {}, 17), [x], wrt=["x"])["x"]
    np.testing.assert_allclose(got, _erf_fd(math.erf, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu(approx: str) -> None:
    x = rnd(4, 5)
    got = grad(_unary_model("Gelu", x, {"approximate": approx}, 20), [x], wrt=["x"])["x"]
    if approx == "none":
        expected = _erf_fd(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))), x)
    else:
        expected = _erf_fd(lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))), x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


def test_clip() -> None:
    check_grad("Clip", {"x": rnd(4, 5)}, consts={"lo": np.array(-0.5), "hi": np.array(0.7)}, wrt=["x"])


def test_where_and_prelu() -> None:
    cond = rnd(3, 4) > 0
    node_inputs = {"a": rnd(3, 4, seed=1), "b": rnd(4, seed=2)}
    _where_check(cond, node_inputs)
    check_grad("PRelu", {"x": rnd(3, 4)}, consts={"slope": rnd(4, seed=5)}, wrt=["x", "slope"])


def _where_check(cond: np.ndarray, inputs: dict[str, np.ndarray]) -> None:
    nodes = [helper.make_node("Where", ["c", "a", "b"], ["y0"]), helper.make_node("Mul", ["y0", "R"], ["z"])]
    r = rnd(3, 4, seed=9)
    model = _model(nodes, inputs, {"c": cond, "R": r}, "z", 17)
    got = grad(model, inputs, wrt=["a", "b"])
    for k in ("a", "b"):
        np.testing.assert_allclose(got[k], numeric_grad(model, inputs, k), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic(op: str) -> None:
    check_grad(op, {"a": rnd(3, 4), "b": rnd(4, seed=1), "c": rnd(3, 4, seed=2)})


# ---------------------------------------------------------------------- matmul


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
                                   ((4,), (4, 5)), ((3, 4), (4,))])
def test_matmul(sa: tuple, sb: tuple) -> None:
    check_grad("MatMul", {"a": rnd(*sa), "b": rnd(*sb, seed=1)})


@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("cshape", [(5,), (3, 5), (3, 1)])
def test_gemm(ta: int, tb: int, cshape: tuple) -> None:
    a = rnd(*((4, 3) if ta else (3, 4)))
    b = rnd(*((5, 4) if tb else (4, 5)), seed=1)
    check_grad("Gemm", {"a": a, "b": b, "c": rnd(*cshape, seed=2)},
               {"transA": ta, "transB": tb, "alpha": 0.7, "beta": 1.3})


# ---------------------------------------------------------------------- convolution and pooling


CONVS = [
    ({"pads": [1, 1, 1, 1]}, (2, 3, 6, 6), (4, 3, 3, 3)),
    ({"strides": [2, 2], "pads": [1, 0, 0, 1]}, (1, 2, 7, 6), (3, 2, 3, 3)),
    ({"dilations": [2, 1], "pads": [2, 1, 2, 1]}, (1, 2, 6, 5), (2, 2, 3, 3)),
    ({"group": 2, "strides": [2, 1]}, (1, 4, 6, 5), (6, 2, 2, 3)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 2, 5, 5), (2, 2, 3, 3)),
    ({"strides": [2], "pads": [1, 1]}, (2, 3, 9), (4, 3, 3)),
]


@pytest.mark.parametrize("attrs,xs,ws", CONVS, ids=[str(i) for i in range(len(CONVS))])
def test_conv(attrs: dict, xs: tuple, ws: tuple) -> None:
    check_grad("Conv", {"x": rnd(*xs)}, attrs, consts={"w": rnd(*ws, seed=1), "b": rnd(ws[0], seed=2)},
               wrt=["x", "w", "b"])


POOLS = [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
]


@pytest.mark.parametrize("op,attrs", POOLS, ids=[f"{p[0]}{i}" for i, p in enumerate(POOLS)])
def test_pool(op: str, attrs: dict) -> None:
    check_grad(op, {"x": rnd(2, 3, 6, 6)}, attrs)


# ---------------------------------------------------------------------- normalization, softmax


@pytest.mark.parametrize("op,axis,opset", [("Softmax", -1, 17), ("Softmax", 1, 17), ("LogSoftmax", -1, 17),
                                           ("LogSoftmax", 1, 13)])
def test_softmax(op: str, axis: int, opset: int) -> None:
    check_grad(op, {"x": rnd(2, 3, 4)}, {"axis": axis}, opset=opset)


@pytest.mark.parametrize("axis", [-1, -2])
def test_layer_norm(axis: int) -> None:
    shape = (3, 4) if axis == -2 else (4,)
    check_grad("LayerNormalization", {"x": rnd(2, 3, 4)}, {"axis": axis, "epsilon": 1e-3},
               consts={"s": rnd(*shape, seed=1), "b": rnd(*shape, seed=2)}, wrt=["x", "s", "b"])


def test_batchnorm_inference() -> None:
    c = 3
    consts = {"s": rnd(c, seed=1), "b": rnd(c, seed=2), "m": rnd(c, seed=3), "v": rnd(c, seed=4, positive=True)}
    check_grad("BatchNormalization", {"x": rnd(2, c, 4, 4)}, {"epsilon": 1e-3}, consts=consts, wrt=["x", "s", "b"])


# ---------------------------------------------------------------------- data movement, reductions


def _i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


MOVES = [
    ("Transpose", {"perm": [2, 0, 1]}, {}),
    ("Reshape", {}, {"shape": _i64(5, -1)}),
    ("Flatten", {"axis": 2}, {}),
    ("Squeeze", {}, {"axes": _i64(1)}),
    ("Unsqueeze", {}, {"axes": _i64(0, 3)}),
    ("Slice", {}, {"starts": _i64(0, 1), "ends": _i64(2, 10), "axes": _i64(0, 2), "steps": _i64(1, 2)}),
    ("Slice", {}, {"starts": _i64(-1), "ends": _i64(-10), "axes": _i64(2), "steps": _i64(-2)}),
    ("Pad", {}, {"pads": _i64(0, 1, 2, 0, 0, 1)}),
    ("Expand", {}, {"shape": _i64(2, 2, 1, 5)}),
    ("Tile", {}, {"repeats": _i64(2, 1, 3)}),
    ("Gather", {"axis": 0}, {"idx": _i64(1, 0, 1)}),
    ("Gather", {"axis": 2}, {"idx": np.array([[0, 4], [4, -1]], dtype=np.int64)}),
    ("ReduceSum", {"keepdims": 0}, {"axes": _i64(0, 2)}),
    ("ReduceSum", {"keepdims": 1}, {}),
    ("ReduceMean", {"keepdims": 1, "axes": [-1]}, {}),
    ("ReduceMean", {"keepdims": 0}, {}),
]


@pytest.mark.parametrize("op,attrs,consts", MOVES, ids=[f"{m[0]}{i}" for i, m in enumerate(MOVES)])
def test_movement_and_reduce(op: str, attrs: dict, consts: dict) -> None:
    x = rnd(2, 1, 5) if op in ("Squeeze", "Expand") else rnd(2, 3, 5)
    check_grad(op, {"x": x}, attrs, consts=consts, wrt=["x"])


def test_concat_split() -> None:
    check_grad("Concat", {"a": rnd(2, 3), "b": rnd(2, 1, seed=1), "c": rnd(2, 4, seed=2)}, {"axis": 1})
    check_grad("Split", {"x": rnd(2, 7)}, {"axis": 1}, consts={"split": _i64(3, 4)}, wrt=["x"], n_outputs=2)


# ---------------------------------------------------------------------- losses


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy(reduction: str, weighted: bool) -> None:
    labels = _i64(0, 2, 1, 2)
    consts = {"labels": labels, **({"w": np.array([0.5, 2.0, 1.5])} if weighted else {})}
    check_grad("SoftmaxCrossEntropyLoss", {"x": rnd(4, 3)}, {"reduction": reduction, "ignore_index": 1},
               consts=consts, wrt=["x"])


def test_softmax_cross_entropy_spatial_and_nll() -> None:
    labels = np.array([[0, 2, 1], [1, 1, 0]], dtype=np.int64)
    check_grad("SoftmaxCrossEntropyLoss", {"x": rnd(2, 3, 3)}, {}, consts={"labels": labels}, wrt=["x"])
    check_grad("NegativeLogLikelihoodLoss", {"x": rnd(2, 3, 3)}, {"ignore_index": 2},
               consts={"labels": labels, "w": np.array([0.5, 2.0, 1.5])}, wrt=["x"])


# ---------------------------------------------------------------------- remaining differentiable operators


def _f(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float32)


def _with_zeros() -> np.ndarray:
    """ReduceProd data with one zero in one row and two in another (exact adjoint at zeros)."""
    x = rnd(3, 4, positive=True)
    x[0, 1] = 0.0
    x[2, 0] = x[2, 3] = 0.0
    return x


MORE = [
    ("Celu", {"alpha": 0.7}, {}, lambda: rnd(3, 5), 17),
    ("HardSwish", {}, {}, lambda: 2.5 * rnd(4, 5), 17),
    ("Mish", {}, {}, lambda: rnd(3, 5), 18),
    ("Hardmax", {"axis": 1}, {}, lambda: rnd(3, 5), 17),
    ("DepthToSpace", {"blocksize": 2}, {}, lambda: rnd(1, 8, 2, 3), 17),
    ("DepthToSpace", {"blocksize": 2, "mode": "CRD"}, {}, lambda: rnd(1, 8, 2, 3), 17),
    ("SpaceToDepth", {"blocksize": 2}, {}, lambda: rnd(1, 2, 4, 6), 17),
    ("GatherElements", {"axis": 1}, {"idx": np.array([[0, -1], [3, 3], [-4, 1]], dtype=np.int64)},
     lambda: rnd(3, 5), 17),
    ("GatherElements", {"axis": 0}, {"idx": np.array([[1, 0, 2, 2], [1, 2, 0, 1], [-1, 1, 1, 0]], dtype=np.int64)},
     lambda: rnd(3, 4), 17),
    ("Resize", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     {"roi": _f(), "scales": _f(1, 1, 2, 2)}, lambda: rnd(1, 2, 3, 4), 13),
    ("Resize", {"mode": "nearest"}, {"roi": _f(), "scales": _f(1, 1, 1.5, 0.5)}, lambda: rnd(1, 2, 4, 6), 13),
    ("Resize", {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, {"roi": _f(), "scales": _f(1, 3, 1, 1)},
     lambda: rnd(2, 2, 3, 2), 13),
    ("Resize", {"mode": "linear"}, {"roi": _f(), "scales": _f(1, 1, 2, 1.5)}, lambda: rnd(1, 2, 3, 4), 13),
    ("Resize", {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
     {"roi": _f(), "scales": _f(), "sizes": _i64(1, 2, 5, 3)}, lambda: rnd(1, 2, 3, 4), 13),
    ("Upsample", {"mode": "nearest"}, {"scales": _f(1, 1, 2, 3)}, lambda: rnd(1, 2, 3, 2), 9),
    ("ReduceL1", {"axes": [1], "keepdims": 0}, {}, lambda: rnd(3, 4, 2), 17),
    ("ReduceL2", {"axes": [0, 2]}, {}, lambda: rnd(3, 4, 2), 17),
    ("ReduceLogSum", {"axes": [1]}, {}, lambda: rnd(3, 4, 2, positive=True), 17),
    ("ReduceLogSumExp", {"keepdims": 0}, {}, lambda: rnd(3, 4, 2), 17),
    ("ReduceLogSumExp", {"keepdims": 0}, {"axes": _i64(-1)}, lambda: rnd(3, 4, 2), 18),
    ("ReduceProd", {"axes": [1]}, {}, lambda: rnd(3, 4, 2), 17),
    ("ReduceProd", {"keepdims": 0}, {"axes": _i64(1)}, _with_zeros, 18),
]


@pytest.mark.parametrize("op,attrs,consts,make,opset", MORE, ids=[f"{m[0]}{i}" for i, m in enumerate(MORE)])
def test_more_adjoints(op: str, attrs: dict, consts: dict, make, opset: int) -> None:  # type: ignore[no-untyped-def]
    check_grad(op, {"x": make()}, attrs, consts=consts, wrt=["x"], opset=opset)


@pytest.mark.parametrize("fmod", [1])
def test_more_adjoints_mod(fmod: int) -> None:
    check_grad("Mod", {"a": 3.0 * rnd(3, 4), "b": rnd(4, seed=1, positive=True)}, {"fmod": fmod})


def test_more_adjoints_instance_norm() -> None:
    check_grad("InstanceNormalization", {"x": rnd(2, 3, 3, 2)}, {"epsilon": 1e-3},
               consts={"s": rnd(3, seed=1), "b": rnd(3, seed=2)}, wrt=["x", "s", "b"])


CONV_TRANSPOSES = [
    ({}, (1, 2, 3, 3), (2, 3, 2, 2)),
    ({"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 0]}, (2, 2, 3, 3), (2, 3, 3, 3)),
    ({"dilations": [2, 1], "pads": [1, 1, 0, 2]}, (1, 2, 3, 3), (2, 2, 2, 3)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 2, 3, 2), (2, 2, 3, 3)),
    ({"output_shape": [7, 6], "strides": [2, 2]}, (1, 2, 3, 3), (2, 1, 3, 2)),
    ({"strides": [3], "pads": [1, 2]}, (2, 3, 4), (3, 2, 3)),
]


@pytest.mark.parametrize("attrs,xs,ws", CONV_TRANSPOSES, ids=[str(i) for i in range(len(CONV_TRANSPOSES))])
def test_more_adjoints_conv_transpose(attrs: dict, xs: tuple, ws: tuple) -> None:
    oc = ws[1] * attrs.get("group", 1)
    check_grad("ConvTranspose", {"x": rnd(*xs)}, attrs, consts={"w": rnd(*ws, seed=1), "b": rnd(oc, seed=2)},
               wrt=["x", "w", "b"])


def _np_lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """ONNX LRN in numpy (onnx.reference's LRN windows over the batch axis instead of channels)."""
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    chans, sq = x.shape[1], x * x
    s = np.stack([sq[:, max(0, c - before):min(chans, c + after + 1)].sum(1) for c in range(chans)], axis=1)
    return x / (bias + alpha / size * s) ** beta


def _np_mvn(x: np.ndarray, axes: list[int]) -> np.ndarray:
    """ONNX MeanVarianceNormalization in numpy (onnx.reference's adds a float32 epsilon to float64)."""
    xc = x - x.mean(axis=tuple(axes), keepdims=True)
    return xc / (np.sqrt((xc * xc).mean(axis=tuple(axes), keepdims=True)) + 1e-9)


NUMPY_ORACLES = [
    ("LRN", {"size": 3, "alpha": 0.5, "beta": 0.75, "bias": 1.5}, (2, 5, 2, 2),
     lambda x: _np_lrn(x, 3, 0.5, 0.75, 1.5)),
    ("LRN", {"size": 4, "alpha": 0.3, "beta": 0.6, "bias": 2.0}, (1, 6, 3), lambda x: _np_lrn(x, 4, 0.3, 0.6, 2.0)),
    ("MeanVarianceNormalization", {}, (2, 3, 2, 3), lambda x: _np_mvn(x, [0, 2, 3])),
    ("MeanVarianceNormalization", {"axes": [1, -1]}, (2, 3, 4), lambda x: _np_mvn(x, [1, 2])),
]


@pytest.mark.parametrize("op,attrs,shape,fn", NUMPY_ORACLES, ids=[f"{m[0]}{i}" for i, m in enumerate(NUMPY_ORACLES)])
def test_more_adjoints_numpy_oracle(op: str, attrs: dict, shape: tuple, fn) -> None:  # type: ignore[no-untyped-def]
    """Gradient of sum(op(x) * R) against central differences of a numpy twin of the operator."""
    x = rnd(*shape)
    r = np.random.default_rng(7).standard_normal(shape)
    nodes = [helper.make_node(op, ["x"], ["y"], **attrs), helper.make_node("Mul", ["y", "R"], ["z"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F64, shape)],
                          [helper.make_tensor_value_info("z", F64, shape)], [numpy_helper.from_array(r, "R")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    got = grad(model, {"x": x}, wrt=["x"])["x"]
    expected = np.zeros_like(x)
    eps = 1e-6
    for idx in np.ndindex(shape):
        hi, lo = x.copy(), x.copy()
        hi[idx] += eps
        lo[idx] -= eps
        expected[idx] = (np.sum(fn(hi) * r) - np.sum(fn(lo) * r)) / (2 * eps)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{op} d/dx")


def _convt_per_group(x: np.ndarray, w: np.ndarray, group: int, attrs: dict) -> np.ndarray:
    """Grouped ConvTranspose as one onnx.reference ConvTranspose per group (it ignores ``group``)."""
    c, outs = x.shape[1] // group, []
    for i in range(group):
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
        model = _model([node], {"x": x[:, i * c:(i + 1) * c]}, {"w": w[i * c:(i + 1) * c]}, "y", 17)
        outs.append(ReferenceEvaluator(model).run(None, {"x": x[:, i * c:(i + 1) * c]})[0])
    return np.concatenate(outs, axis=1)


def test_more_adjoints_conv_transpose_grouped() -> None:
    """Grouped ConvTranspose gradients (x and w) against central differences of a per-group oracle."""
    attrs, group = {"strides": [2, 1], "dilations": [1, 2]}, 2
    x, w = rnd(1, 4, 3, 3), rnd(4, 1, 2, 2, seed=1)
    y = _convt_per_group(x, w, group, attrs)
    r = np.random.default_rng(3).standard_normal(y.shape)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=group, **attrs),
             helper.make_node("Mul", ["y", "R"], ["z"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F64, x.shape)],
                          [helper.make_tensor_value_info("z", F64, y.shape)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(r, "R")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    got = grad(model, {"x": x}, wrt=["x", "w"])
    for name, base in (("x", x), ("w", w)):
        expected = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            hi, lo = base.copy(), base.copy()
            hi[idx] += 1e-6
            lo[idx] -= 1e-6
            f_hi = _convt_per_group(hi, w, group, attrs) if name == "x" else _convt_per_group(x, hi, group, attrs)
            f_lo = _convt_per_group(lo, w, group, attrs) if name == "x" else _convt_per_group(x, lo, group, attrs)
            expected[idx] = (np.sum(f_hi * r) - np.sum(f_lo * r)) / 2e-6
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6, err_msg=f"ConvTranspose d/d{name}")
