"""Pooling, LRN and normalisation operators against onnx's reference evaluator, onnxruntime or numpy.

onnxruntime (or numpy) is the oracle where the reference evaluator is known to be wrong: LRN (its
loop runs over the batch size instead of the channels), GlobalMaxPool on non-4-D inputs (it reduces
the wrong axes) and ceil-mode windows needing more than one extra padded element (it splits that
tail between both sides, shifting the windows).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_matches_reference, check_node, make_model, run_portable
from onnx import helper

from portable.errors import ModelError


def _x(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _check_ort(op: str, x: np.ndarray, attrs: dict, opset: int, n_outputs: int = 1) -> list[np.ndarray]:
    """Portable against onnxruntime for a one-node model with input ``x``."""
    outs = [f"y{i}" for i in range(n_outputs)]
    model = make_model([helper.make_node(op, ["x"], outs, **attrs)], {"x": x}, outs, opset=opset)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": x})
    got = run_portable(model, {"x": x})
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    return got


POOL_2D = [
    {"kernel_shape": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [3, 3], "auto_pad": "VALID", "strides": [2, 2]},
]


@pytest.mark.parametrize("attrs", POOL_2D)
@pytest.mark.parametrize("opset", [12, 22])
def test_max_pool_2d(attrs, opset, rng):
    check_node("MaxPool", {"x": _x((2, 3, 7, 6), rng)}, attrs, opset=opset)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
    {"kernel_shape": [2], "dilations": [2], "strides": [1]},
    {"kernel_shape": [3], "strides": [2], "ceil_mode": 1},
])
def test_max_pool_1d(attrs, rng):
    check_node("MaxPool", {"x": _x((2, 3, 9), rng)}, attrs, opset=12)


def test_max_pool_dilated_2d(rng):
    check_node("MaxPool", {"x": _x((1, 2, 8, 8), rng)},
               {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 1, 2, 2]}, opset=12)


def test_max_pool_3d(rng):
    check_node("MaxPool", {"x": _x((1, 2, 4, 5, 4), rng)}, {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]},
               opset=12)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 3], "strides": [2, 1], "pads": [0, 1, 1, 1]},
])
def test_max_pool_indices(storage_order, attrs, rng):
    x = rng.integers(-3, 4, (2, 3, 6, 5)).astype(np.float32)  # ties: the first maximum must win
    check_node("MaxPool", {"x": x}, {**attrs, "storage_order": storage_order}, n_outputs=2, opset=12)


def test_max_pool_indices_1d(rng):
    check_node("MaxPool", {"x": _x((2, 2, 9), rng)}, {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
               n_outputs=2, opset=12)


def test_max_pool_int8(rng):
    x = rng.integers(-128, 127, (1, 2, 6, 6)).astype(np.int8)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    check_node("MaxPool", {"x": x}, attrs, opset=12)


@pytest.mark.parametrize("attrs", POOL_2D)
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_2d(attrs, count_include_pad, rng):
    check_node("AveragePool", {"x": _x((2, 3, 7, 6), rng)}, {**attrs, "count_include_pad": count_include_pad},
               opset=11)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3], "strides": [2], "pads": [1, 2]},
    {"kernel_shape": [4], "strides": [3], "ceil_mode": 1},
])
def test_average_pool_1d(count_include_pad, attrs, rng):
    check_node("AveragePool", {"x": _x((2, 3, 10), rng)}, {**attrs, "count_include_pad": count_include_pad},
               opset=11)


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_dilated(count_include_pad, rng):
    attrs = {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1],
             "count_include_pad": count_include_pad}
    check_node("AveragePool", {"x": _x((1, 2, 6, 7), rng)}, attrs, opset=19)


@pytest.mark.parametrize("op,extra", [("AveragePool", {"count_include_pad": 0}),
                                      ("AveragePool", {"count_include_pad": 1}), ("MaxPool", {})])
def test_pool_ceil_mode_long_tail(op, extra, rng):
    """Ceil mode whose last window needs two extra tail elements (stride 3): checked with onnxruntime."""
    attrs = {"kernel_shape": [3, 3], "strides": [3, 3], "ceil_mode": 1, "pads": [0, 1, 0, 0], **extra}
    y = _check_ort(op, _x((1, 2, 7, 7), rng), attrs, opset=19)
    assert y[0].shape == (1, 2, 3, 3)


@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
def test_pool_ceil_mode_drops_window_starting_in_right_padding(op, rng):
    """in=8, pad 1+1, k=3, s=3: ceil gives 4 windows, but the 4th would start in the right padding."""
    attrs = {"kernel_shape": [3, 3], "strides": [3, 3], "ceil_mode": 1, "pads": [0, 1, 0, 1]}
    y = _check_ort(op, _x((1, 2, 8, 8), rng), attrs, opset=19)
    assert y[0].shape == (1, 2, 3, 3)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 2, 2)])
def test_global_pools(op, shape, rng):
    if op == "GlobalMaxPool":  # the reference evaluator reduces the wrong axes unless the input is 4-D
        _check_ort(op, _x(shape, rng), {}, opset=17)
    else:
        check_node(op, {"x": _x(shape, rng)}, {})


def test_pool_kernel_rank_mismatch(rng):
    x = _x((1, 2, 5, 5), rng)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2])
    vis = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)]
    out = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, (1, 2, 4, 4))]
    model = helper.make_model(helper.make_graph([node], "t", vis, out),
                              opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    with pytest.raises(ModelError, match="kernel_shape"):
        run_portable(model, {"x": x})


def _lrn_numpy(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The ONNX LRN formula, written directly from the operator documentation."""
    c = x.shape[1]
    sq = np.zeros_like(x, dtype=np.float64)
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c - 1, i + int(np.ceil((size - 1) / 2)))
        sq[:, i] = (x[:, lo:hi + 1].astype(np.float64) ** 2).sum(axis=1)
    return (x / (bias + alpha / size * sq) ** beta).astype(np.float32)


@pytest.mark.parametrize("size,alpha,beta,bias", [(3, 1e-4, 0.75, 1.0), (4, 0.5, 0.6, 2.0),
                                                  (1, 0.1, 1.0, 1.0), (7, 0.3, 0.75, 1.5)])
def test_lrn(size, alpha, beta, bias, rng):
    x = _x((2, 5, 3, 4), rng)
    attrs = {"size": size, "alpha": alpha, "beta": beta, "bias": bias}
    if size % 2:
        got = _check_ort("LRN", x, attrs, opset=13)
    else:  # onnxruntime only implements odd sizes
        model = make_model([helper.make_node("LRN", ["x"], ["y"], **attrs)], {"x": x}, ["y"], opset=13)
        got = run_portable(model, {"x": x})
    np.testing.assert_allclose(got[0], _lrn_numpy(x, size, alpha, beta, bias), rtol=1e-5, atol=1e-6)


def test_lrn_matches_reference_when_batch_equals_channels(rng):
    """The reference evaluator is right when N == C (its loop bug is then harmless)."""
    check_node("LRN", {"x": _x((3, 3, 2, 2), rng)}, {"size": 2, "alpha": 0.2, "beta": 0.5, "bias": 1.0})


@pytest.mark.parametrize("axis", [-1, 1, 2, 0])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_normalization(axis, with_bias, rng):
    x = _x((2, 3, 4), rng)
    norm_shape = x.shape[axis % 3:]
    inits = {"scale": _x(norm_shape, rng)}
    if with_bias:
        inits["bias"] = _x(norm_shape, rng)
    check_node("LayerNormalization", {"x": x}, {"axis": axis, "epsilon": 1e-3}, initializers=inits,
               n_outputs=3, opset=17)


def test_layer_normalization_runtime_scale_broadcast(rng):
    """Scale and B as runtime inputs; B broadcast from a smaller shape."""
    x = _x((2, 3, 4), rng)
    check_node("LayerNormalization", {"x": x, "s": _x((3, 4), rng), "b": _x((4,), rng)}, {"axis": 1},
               n_outputs=1, opset=17)


def test_layer_normalization_mean_output_only(rng):
    x = _x((3, 6), rng)
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean"], axis=-1)
    model = make_model([node], {"x": x}, ["y", "mean"], {"s": _x((6,), rng)}, opset=18)
    assert_matches_reference(model, {"x": x})


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5)])
def test_instance_normalization(shape, rng):
    c = shape[1]
    check_node("InstanceNormalization", {"x": _x(shape, rng)}, {"epsilon": 1e-2},
               initializers={"scale": _x((c,), rng), "b": _x((c,), rng)})


def _mvn_model(x: np.ndarray, axes: list[int] | None, opset: int) -> onnx.ModelProto:
    # MeanVarianceNormalization's function body fails onnx's strict shape inference: declare the output
    kw = {} if axes is None else {"axes": axes}
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"], **kw)
    vis = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)]
    out = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, x.shape)]
    model = helper.make_model(helper.make_graph([node], "t", vis, out),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("axes", [None, [1], [0, -1], [2, 3]])
@pytest.mark.parametrize("opset", [9, 13])
def test_mean_variance_normalization(axes, opset, rng):
    x = _x((2, 3, 4, 5), rng)
    assert_matches_reference(_mvn_model(x, axes, opset), {"x": x}, atol=1e-4)


def test_pool_and_norm_with_epilogues(rng):
    """AveragePool -> Relu and LayerNormalization -> Add chains (epilogues fused into the anchors)."""
    x = _x((1, 4, 6, 6), rng)
    nodes = [
        helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["p"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "s"], ["n"], axis=1),
        helper.make_node("Add", ["n", "b"], ["y"]),
    ]
    inits = {"s": _x((4, 3, 3), rng), "b": _x((4, 3, 3), rng)}
    assert_matches_reference(make_model(nodes, {"x": x}, ["y"], inits, opset=17), {"x": x})
