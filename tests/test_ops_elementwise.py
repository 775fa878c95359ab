"""Elementwise, matmul and convolution operators against onnx's reference evaluator (``check_node``)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check_node
from onnx import TensorProto

F32 = np.float32


def _rand(rng: np.random.Generator, *shape: int, dtype: type = F32) -> np.ndarray:
    """Standard normal samples of ``shape`` as ``dtype``."""
    return rng.standard_normal(shape).astype(dtype)


def _ints(rng: np.random.Generator, *shape: int, dtype: type = np.int32, lo: int = -9, hi: int = 10) -> np.ndarray:
    """Uniform integers in [lo, hi) of ``shape`` as ``dtype``."""
    return rng.integers(lo, hi, size=shape).astype(dtype)


# ---------------------------------------------------------------- arithmetic with broadcasting
BROADCAST_SHAPES = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)), ((1, 3, 1), (2, 1, 5))]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
def test_arith_broadcast(rng, op, shapes):
    a = _rand(rng, *shapes[0])
    b = _rand(rng, *shapes[1])
    if op == "Div":
        b = np.where(np.abs(b) < 0.1, F32(0.5), b).astype(F32)
    check_node(op, {"a": a, "b": b})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_arith_int(rng, op, dtype):
    a = _ints(rng, 3, 4, dtype=dtype)
    b = _ints(rng, 4, dtype=dtype, lo=1, hi=7) * np.array([1, -1, 1, -1], dtype=dtype)
    check_node(op, {"a": a, "b": b})


def test_arith_with_constant_operand(rng):
    check_node("Mul", {"a": _rand(rng, 2, 3)}, initializers={"b": np.array([1.5, -2.0, 0.25], F32)})
    check_node("Add", {"a": _rand(rng, 2, 3)}, initializers={"b": np.array(3.0, F32)})


def test_pow(rng):
    base = np.abs(_rand(rng, 2, 3)) + F32(0.1)
    check_node("Pow", {"a": base, "b": _rand(rng, 3)})
    check_node("Pow", {"a": _rand(rng, 2, 3), "b": np.array([2, 3, 0], np.int64)})
    check_node("Pow", {"a": _ints(rng, 2, 3, dtype=np.int64), "b": np.array([0, 1, 2], np.int64)})


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_mod_int(rng, fmod, dtype):
    a = _ints(rng, 3, 4, dtype=dtype, lo=-20, hi=20)
    b = np.array([3, -3, 7, -5], dtype=dtype)
    check_node("Mod", {"a": a, "b": b}, {"fmod": fmod})


def test_mod_float_fmod(rng):
    a = _rand(rng, 3, 4) * F32(5)
    b = np.array([1.5, -2.0, 3.0, -0.7], F32)
    check_node("Mod", {"a": a, "b": b}, {"fmod": 1})


# ---------------------------------------------------------------- unary math and activations
UNARY = ["Neg", "Abs", "Exp", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tanh", "Erf", "Relu", "Sigmoid",
         "Softplus", "Softsign", "HardSwish", "Mish"]


@pytest.mark.parametrize("op", UNARY)
def test_unary(rng, op):
    x = _rand(rng, 2, 3, 5) * F32(3)
    if op == "Round":  # halves round to even
        x.ravel()[:5] = [0.5, 1.5, 2.5, -0.5, -1.5]
    check_node(op, {"x": x}, opset=18 if op == "Mish" else 17)


@pytest.mark.parametrize("op", ["Sqrt", "Log", "Reciprocal"])
def test_unary_positive(rng, op):
    check_node(op, {"x": np.abs(_rand(rng, 3, 4)) + F32(0.05)})


def test_unary_int(rng):
    x = _ints(rng, 3, 4)
    for op in ("Neg", "Abs", "Sign", "Relu"):
        check_node(op, {"x": x}, opset=14)


@pytest.mark.parametrize("op,attrs", [
    ("LeakyRelu", {}), ("LeakyRelu", {"alpha": 0.3}),
    ("Elu", {}), ("Elu", {"alpha": 0.5}),
    ("Celu", {}), ("Celu", {"alpha": 2.0}),
    ("ThresholdedRelu", {}), ("ThresholdedRelu", {"alpha": 0.4}),
    ("Selu", {}), ("Selu", {"alpha": 2.0, "gamma": 3.0}),
    ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.5, "beta": 0.6}),
    ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
], ids=lambda v: str(v) if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_activation_attrs(rng, op, attrs):
    x = _rand(rng, 2, 3, 4) * F32(2)
    check_node(op, {"x": x}, attrs, opset=20 if op == "Gelu" else 17)


def test_softplus_mish_extremes():
    x = np.array([-100, -30, -10, -1e-3, 0, 1e-3, 10, 30, 100], F32)
    check_node("Softplus", {"x": x})
    check_node("Mish", {"x": x}, opset=18)


def test_prelu_broadcast(rng):
    x = _rand(rng, 2, 3, 4, 4)
    check_node("PRelu", {"x": x}, initializers={"slope": np.array([0.1, 0.2, 0.3], F32).reshape(3, 1, 1)})
    check_node("PRelu", {"x": x, "slope": _rand(rng, 4)})


# ---------------------------------------------------------------- comparisons and logic
@pytest.mark.parametrize("op", ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
@pytest.mark.parametrize("dtype", [F32, np.int64])
def test_compare(rng, op, dtype):
    a = _ints(rng, 3, 4, dtype=dtype, lo=-3, hi=3)
    b = _ints(rng, 4, dtype=dtype, lo=-3, hi=3)
    (y,) = check_node(op, {"a": a, "b": b})
    assert y.dtype == np.bool_


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(rng, op):
    a = rng.random((3, 4)) > 0.5
    b = rng.random((1, 4)) > 0.5
    (y,) = check_node(op, {"a": a, "b": b})
    assert y.dtype == np.bool_


def test_not_isnan_isinf():
    x = np.array([[0.0, np.nan, np.inf, -np.inf, -1.5, 2.0]], F32)
    check_node("Not", {"x": x > 0})
    check_node("IsNaN", {"x": x})
    for pos, neg in ((1, 1), (1, 0), (0, 1)):
        check_node("IsInf", {"x": x}, {"detect_positive": pos, "detect_negative": neg})


def test_compare_feeds_where(rng):
    """A bool produced by a comparison consumed by Where (fused in one kernel)."""
    from onnx import helper

    from conftest import assert_matches_reference, make_model

    a, b = _rand(rng, 3, 4), _rand(rng, 3, 4)
    nodes = [helper.make_node("Greater", ["a", "b"], ["c"]), helper.make_node("Where", ["c", "a", "b"], ["y"])]
    assert_matches_reference(make_model(nodes, {"a": a, "b": b}, ["y"]), {"a": a, "b": b})


# ---------------------------------------------------------------- casts
CAST_TYPES = {np.float32: TensorProto.FLOAT, np.int32: TensorProto.INT32, np.int64: TensorProto.INT64,
              np.bool_: TensorProto.BOOL}


def _cast_source(dtype: type) -> np.ndarray:
    x = np.array([[-2.75, -1.0, -0.5, 0.0], [0.25, 1.0, 3.5, 7.9]], F32)
    if dtype is np.bool_:
        return x > 0
    return x.astype(dtype)


@pytest.mark.parametrize("src", list(CAST_TYPES), ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("dst", list(CAST_TYPES), ids=lambda t: np.dtype(t).name)
def test_cast(src, dst):
    (y,) = check_node("Cast", {"x": _cast_source(src)}, {"to": CAST_TYPES[dst]})
    assert y.dtype == np.dtype(dst)


@pytest.mark.parametrize("src,dst", [(np.float32, np.int64), (np.int32, np.float32), (np.int64, np.bool_),
                                     (np.bool_, np.float32)], ids=str)
def test_castlike(src, dst):
    (y,) = check_node("CastLike", {"x": _cast_source(src), "like": np.zeros((1,), dst)})
    assert y.dtype == np.dtype(dst)


# ---------------------------------------------------------------- Clip
def test_clip_opset6_attrs(rng):
    x = _rand(rng, 3, 5) * F32(3)
    check_node("Clip", {"x": x}, {"min": -1.0, "max": 0.5}, opset=6)
    check_node("Clip", {"x": x}, {"min": -0.2}, opset=6)
    check_node("Clip", {"x": x}, opset=6)


def test_clip_opset13_inputs(rng):
    from onnx import helper

    from conftest import assert_matches_reference, make_model

    x = _rand(rng, 3, 5) * F32(3)
    lo, hi = np.array(-1.0, F32), np.array(0.5, F32)
    check_node("Clip", {"x": x}, initializers={"lo": lo, "hi": hi}, opset=13)
    check_node("Clip", {"x": x, "lo": lo, "hi": hi}, opset=13)  # bounds as run-time inputs
    check_node("Clip", {"x": x}, initializers={"lo": lo}, opset=13)
    check_node("Clip", {"x": x}, opset=13)
    node = helper.make_node("Clip", ["x", "", "hi"], ["y"])  # omitted min
    assert_matches_reference(make_model([node], {"x": x}, ["y"], {"hi": hi}, opset=13), {"x": x})
    xi = _ints(rng, 3, 5, lo=-20, hi=20)
    check_node("Clip", {"x": xi}, initializers={"lo": np.array(-4, np.int32), "hi": np.array(6, np.int32)},
               opset=13)


# ---------------------------------------------------------------- variadic, Where
@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic(rng, op):
    check_node(op, {"a": _rand(rng, 2, 3, 4), "b": _rand(rng, 3, 1), "c": _rand(rng, 4)})
    check_node(op, {"a": _rand(rng, 2, 3)})
    check_node(op, {"a": _rand(rng, 2, 3), "b": _rand(rng, 2, 3)})


def test_max_min_int(rng):
    check_node("Max", {"a": _ints(rng, 2, 3), "b": _ints(rng, 3)})
    check_node("Min", {"a": _ints(rng, 2, 3, dtype=np.int64), "b": _ints(rng, 2, 1, dtype=np.int64)})


def test_where(rng):
    c = rng.random((3, 1)) > 0.5
    check_node("Where", {"c": c, "a": _rand(rng, 3, 4), "b": _rand(rng, 4)})
    check_node("Where", {"c": rng.random((2, 3)) > 0.5, "a": _ints(rng, 2, 3, dtype=np.int64),
                         "b": _ints(rng, 1, dtype=np.int64)})


# ---------------------------------------------------------------- BatchNormalization (inference)
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 3, 4, 5)], ids=str)
def test_batchnorm(rng, shape):
    c = shape[1]
    params = {"scale": _rand(rng, c), "bias": _rand(rng, c), "mean": _rand(rng, c),
              "var": np.abs(_rand(rng, c)) + F32(0.1)}
    check_node("BatchNormalization", {"x": _rand(rng, *shape)}, {"epsilon": 1e-3}, initializers=params)


def test_batchnorm_runtime_params(rng):
    x = _rand(rng, 2, 3, 4, 4)
    feeds = {"x": x, "scale": _rand(rng, 3), "bias": _rand(rng, 3), "mean": _rand(rng, 3),
             "var": np.abs(_rand(rng, 3)) + F32(0.1)}
    check_node("BatchNormalization", feeds, opset=15)


# ---------------------------------------------------------------- MatMul and Gemm
@pytest.mark.parametrize("sa,sb", [((5,), (5,)), ((5,), (5, 3)), ((4, 5), (5,)), ((4, 5), (5, 3)),
                                   ((2, 4, 5), (5, 3)), ((5,), (2, 5, 3)), ((2, 1, 4, 5), (3, 5, 6)),
                                   ((3, 4, 5), (3, 5, 2)), ((2, 3, 5), (5,))], ids=str)
def test_matmul(rng, sa, sb):
    check_node("MatMul", {"a": _rand(rng, *sa), "b": _rand(rng, *sb)})


def test_matmul_const_weight_int(rng):
    check_node("MatMul", {"a": _rand(rng, 3, 8)}, initializers={"w": _rand(rng, 8, 4)})
    check_node("MatMul", {"a": _ints(rng, 3, 4), "b": _ints(rng, 4, 2)})


GEMM_ATTRS = [{}, {"transA": 1}, {"transB": 1}, {"transA": 1, "transB": 1}, {"alpha": 0.5}, {"beta": 2.0},
              {"alpha": -1.5, "beta": 0.25, "transB": 1}]


def _gemm_check(rng: np.random.Generator, attrs: dict, c_shape: tuple[int, ...] | None) -> None:
    a = _rand(rng, 5, 3) if attrs.get("transA") else _rand(rng, 3, 5)
    b = _rand(rng, 4, 5) if attrs.get("transB") else _rand(rng, 5, 4)
    inits = {} if c_shape is None else {"c": _rand(rng, *c_shape)}
    check_node("Gemm", {"a": a, "b": b}, attrs, initializers=inits)


@pytest.mark.parametrize("attrs", GEMM_ATTRS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()) or "default")
def test_gemm_attrs(rng, attrs):
    _gemm_check(rng, attrs, (3, 4))


@pytest.mark.parametrize("c_shape", [None, (), (1,), (4,), (3, 1), (1, 4)], ids=str)
def test_gemm_bias_broadcast(rng, c_shape):
    _gemm_check(rng, {"alpha": 0.5, "beta": 2.0, "transB": 1}, c_shape)
    _gemm_check(rng, {}, c_shape)


def test_gemm_runtime_bias(rng):
    check_node("Gemm", {"a": _rand(rng, 3, 5), "b": _rand(rng, 4, 5), "c": _rand(rng, 4)}, {"transB": 1})


# ---------------------------------------------------------------- Conv and ConvTranspose
CONV_2D = [
    ({}, (1, 3, 7, 7), (4, 3, 3, 3)),
    ({"pads": [1, 1, 1, 1]}, (2, 3, 6, 7), (5, 3, 3, 3)),
    ({"pads": [0, 1, 2, 0]}, (1, 2, 6, 6), (3, 2, 3, 2)),
    ({"strides": [2, 2], "pads": [1, 1, 1, 1]}, (1, 3, 9, 8), (4, 3, 3, 3)),
    ({"strides": [2, 1]}, (1, 2, 7, 6), (3, 2, 2, 3)),
    ({"dilations": [2, 2]}, (1, 2, 9, 9), (3, 2, 3, 3)),
    ({"dilations": [2, 1], "pads": [2, 1, 2, 1]}, (1, 2, 8, 8), (3, 2, 3, 3)),
    ({"group": 2}, (1, 4, 6, 6), (6, 2, 3, 3)),
    ({"group": 4, "pads": [1, 1, 1, 1]}, (1, 4, 6, 6), (4, 1, 3, 3)),  # depthwise
    ({"group": 3, "strides": [2, 2]}, (1, 6, 7, 7), (3, 2, 1, 1)),
    ({"auto_pad": "SAME_UPPER"}, (1, 2, 6, 6), (3, 2, 4, 4)),
    ({"auto_pad": "SAME_LOWER"}, (1, 2, 6, 6), (3, 2, 4, 4)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 2, 7, 7), (3, 2, 3, 3)),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (1, 2, 8, 8), (3, 2, 2, 2)),
    ({"auto_pad": "VALID", "strides": [2, 2]}, (1, 2, 7, 7), (3, 2, 3, 3)),
    ({"kernel_shape": [3, 3]}, (1, 2, 5, 5), (3, 2, 3, 3)),
]


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("attrs,xs,ws", CONV_2D, ids=[str(c[0]) for c in CONV_2D])
def test_conv2d(rng, attrs, xs, ws, bias):
    inits = {"w": _rand(rng, *ws)}
    if bias:
        inits["b"] = _rand(rng, ws[0])
    check_node("Conv", {"x": _rand(rng, *xs)}, attrs, initializers=inits, rtol=1e-4, atol=1e-4)


CONV_1D = [({}, 3), ({"pads": [1, 2]}, 3), ({"strides": [2], "dilations": [2]}, 3), ({"group": 2}, 2),
           ({"auto_pad": "SAME_UPPER", "strides": [2]}, 4), ({"auto_pad": "SAME_LOWER"}, 4)]


@pytest.mark.parametrize("attrs,k", CONV_1D, ids=[str(c[0]) for c in CONV_1D])
def test_conv1d(rng, attrs, k):
    g = attrs.get("group", 1)
    inits = {"w": _rand(rng, 4, 4 // g, k), "b": _rand(rng, 4)}
    check_node("Conv", {"x": _rand(rng, 2, 4, 11)}, attrs, initializers=inits, rtol=1e-4, atol=1e-4)


def test_conv_runtime_weight(rng):
    check_node("Conv", {"x": _rand(rng, 1, 2, 6, 6), "w": _rand(rng, 3, 2, 3, 3)}, {"pads": [1, 1, 1, 1]})


CONV_T = [
    ({}, (1, 2, 3, 3), (2, 3, 3, 3)),
    ({"strides": [2, 2]}, (1, 2, 3, 4), (2, 3, 3, 3)),
    ({"strides": [3, 2], "pads": [1, 0, 1, 1]}, (1, 2, 3, 3), (2, 2, 3, 3)),
    ({"strides": [2, 2], "output_padding": [1, 1]}, (1, 1, 3, 3), (1, 2, 3, 3)),
    ({"dilations": [2, 2]}, (1, 1, 3, 3), (1, 2, 2, 2)),
    ({"strides": [3, 2], "output_shape": [10, 8]}, (1, 1, 3, 3), (1, 2, 3, 3)),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (1, 1, 3, 3), (1, 2, 3, 3)),
    ({"strides": [2, 2], "auto_pad": "SAME_LOWER"}, (1, 1, 3, 3), (1, 2, 3, 3)),
]


@pytest.mark.parametrize("attrs,xs,ws", CONV_T, ids=[str(c[0]) for c in CONV_T])
def test_conv_transpose(rng, attrs, xs, ws):
    inits = {"w": _rand(rng, *ws), "b": _rand(rng, ws[1] * attrs.get("group", 1))}
    check_node("ConvTranspose", {"x": _rand(rng, *xs)}, attrs, initializers=inits, rtol=1e-4, atol=1e-4)


def test_conv_transpose_1d(rng):
    check_node("ConvTranspose", {"x": _rand(rng, 1, 2, 5)}, {"strides": [2], "pads": [1, 0]},
               initializers={"w": _rand(rng, 2, 3, 3)}, rtol=1e-4, atol=1e-4)


def test_conv_transpose_groups_vs_onnxruntime(rng):
    """Grouped ConvTranspose against onnxruntime (the reference evaluator mishandles groups)."""
    import onnxruntime as ort
    from onnx import helper

    from conftest import make_model, run_portable

    x, w, b = _rand(rng, 2, 4, 3, 3), _rand(rng, 4, 3, 3, 3), _rand(rng, 6)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], group=2, strides=[2, 2], pads=[1, 0, 0, 1])
    model = make_model([node], {"x": x}, ["y"], {"w": w, "b": b})
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"x": x})
    (got,) = run_portable(model, {"x": x})
    assert got.shape == want.shape == (2, 6, 6, 6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
