"""Reduce*, ArgMax/ArgMin and the softmax family against onnx's reference evaluator (or onnxruntime).

The reference evaluator's Softmax/LogSoftmax/Hardmax ignore the pre-opset-13 "coerce to 2-D"
semantics (they normalise over ``axis`` alone), so those cases are checked against onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import check_node, make_model, run_portable
from onnx import helper

from portable.errors import ModelError

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]
#: opset from which axes is an input (ReduceSum: 13, the others: 18)
AXES_INPUT = {"ReduceSum": 13}


def _data(op: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if op in ("ReduceLogSum", "ReduceProd"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)  # positive, products stay near 1
    return rng.standard_normal(shape).astype(np.float32)


def _check_reduce(op: str, x: np.ndarray, axes: list[int] | None, opset: int, **attrs: int) -> None:
    if opset >= AXES_INPUT.get(op, 18):
        inits = {} if axes is None else {"axes": np.array(axes, np.int64)}
        check_node(op, {"x": x}, attrs, initializers=inits, opset=opset)
    else:
        if axes is not None:
            attrs["axes"] = axes
        check_node(op, {"x": x}, attrs, opset=opset)


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("axes,keepdims", [([0, 2], 1), ([-1], 0)])
def test_reduce_ops(op, opset, axes, keepdims, rng):
    _check_reduce(op, _data(op, (3, 4, 5), rng), axes, opset, keepdims=keepdims)


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([1], 0), (None, 1), (None, 0), ([-3, -1], 0)])
def test_reduce_mean_sum_opsets(opset, axes, keepdims, rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    _check_reduce("ReduceMean", x, axes, opset, keepdims=keepdims)
    if opset == 13:  # the opset where ReduceSum's axes became an input but ReduceMean's did not
        _check_reduce("ReduceSum", x, axes, opset, keepdims=keepdims)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSum",
                                "ReduceLogSumExp", "ReduceSumSquare", "ReduceL1"])
def test_reduce_noop_with_empty_axes(op, rng):
    x = _data(op, (2, 3), rng)
    empty = np.zeros((0,), np.int64)
    check_node(op, {"x": x}, {"noop_with_empty_axes": 1}, initializers={"axes": empty}, opset=18)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax"])
def test_reduce_empty_axes_means_all(op, rng):
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    empty = np.zeros((0,), np.int64)
    y = check_node(op, {"x": x}, {"keepdims": 0}, initializers={"axes": empty}, opset=18)
    assert y[0].shape == ()


def test_reduce_noop_without_axes_input(rng):
    """noop_with_empty_axes with the axes input omitted: identity (plus the elementwise part)."""
    x = rng.uniform(0.5, 2.0, (2, 3)).astype(np.float32)
    check_node("ReduceLogSum", {"x": x}, {"noop_with_empty_axes": 1}, opset=18)


def test_reduce_log_sum_exp_is_stable(rng):
    x = (rng.standard_normal((3, 6)) * 200).astype(np.float32)
    y = check_node("ReduceLogSumExp", {"x": x}, {"axes": [1]}, opset=13, rtol=1e-5)
    assert np.isfinite(y[0]).all()


def test_reduce_sum_int64(rng):
    x = rng.integers(-50, 50, (3, 4)).astype(np.int64)
    check_node("ReduceSum", {"x": x}, {"keepdims": 0}, initializers={"axes": np.array([1], np.int64)},
               opset=13)


def _typed_model(node: onnx.NodeProto, inputs: dict[str, np.ndarray], out_shape: tuple[int, ...],
                 opset: int) -> onnx.ModelProto:
    """A one-node float32-output model with declared types (for nodes shape inference rejects)."""
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in inputs.items()]
    out = helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, out_shape)
    model = helper.make_model(helper.make_graph([node], "t", vis, [out]),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_reduce_axes_must_be_constant(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"])
    model = _typed_model(node, {"x": x, "axes": np.array([1], np.int64)}, (2, 1), 13)
    with pytest.raises(ModelError, match="constant"):
        run_portable(model, {"x": x, "axes": np.array([1], np.int64)})


def test_reduce_axis_out_of_range(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2])
    model = _typed_model(node, {"x": x}, (2, 3), 11)
    with pytest.raises(ModelError, match="axis 2 is out of range"):
        run_portable(model, {"x": x})


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims", [(0, 1), (-1, 0), (1, 1)])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_reduce(op, axis, keepdims, last, rng):
    x = rng.integers(-2, 3, (3, 4, 5)).astype(np.float32)  # many ties: exercises select_last_index
    y = check_node(op, {"x": x}, {"axis": axis, "keepdims": keepdims, "select_last_index": last}, opset=13)
    assert y[0].dtype == np.int64


def test_argmax_opset11_default_axis(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    check_node("ArgMax", {"x": x}, {}, opset=11)


def _check_ort(op: str, x: np.ndarray, attrs: dict, opset: int, atol: float = 1e-5) -> np.ndarray:
    """Portable against onnxruntime for a one-node model."""
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    model = make_model([node], {"x": x}, ["y"], opset=opset)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": x})[0]
    got = run_portable(model, {"x": x})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=atol)
    return got


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [None, 0, -1, 2])
def test_softmax_family_opset13(op, axis, rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    check_node(op, {"x": x}, {} if axis is None else {"axis": axis}, opset=13)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [None, 0, -1])
def test_softmax_family_opset11_flattens_tail(op, axis, rng):
    """Before opset 13 the input is coerced to 2-D at axis and normalised over the flattened tail."""
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    got = _check_ort(op, x, {} if axis is None else {"axis": axis}, opset=11)
    if op == "Softmax":
        a = 1 if axis is None else axis % 3
        np.testing.assert_allclose(got.reshape(int(np.prod(x.shape[:a])), -1).sum(axis=1), 1.0, rtol=1e-5)


def test_softmax_is_stable(rng):
    x = (rng.standard_normal((3, 8)) * 1000).astype(np.float32)
    y = check_node("Softmax", {"x": x}, {}, opset=13)
    assert np.isfinite(y[0]).all()
    # the reference evaluator's LogSoftmax is log(softmax) and underflows to -inf here: use numpy
    node = helper.make_node("LogSoftmax", ["x"], ["y"], axis=1)
    got = run_portable(make_model([node], {"x": x}, ["y"], opset=11), {"x": x})[0]
    shifted = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    expected = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_masked_rows(op, rng):
    """Attention-style -inf masks over 32-wide rows (the vectorised row max), one row all -inf
    (NaN, as numpy gives) and a row with +inf; checked against numpy in float64."""
    x = rng.standard_normal((6, 32)).astype(np.float32)
    x[0, 5:] = -np.inf
    x[1, ::3] = -np.inf
    x[2, :] = -np.inf
    x[3, 7] = np.inf
    node = helper.make_node(op, ["x"], ["y"], axis=-1)
    got = run_portable(make_model([node], {"x": x}, ["y"], opset=13), {"x": x})[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = x.astype(np.float64) - x.max(axis=1, keepdims=True)
        total = np.exp(shifted).sum(axis=1, keepdims=True)
        expected = np.exp(shifted) / total if op == "Softmax" else shifted - np.log(total)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(got[2]).all() and np.isnan(got[3]).any()


def test_hardmax_ties_pick_first(rng):
    x = np.array([[1, 3, 3, 0], [2, 2, 2, 2]], np.float32)
    y = check_node("Hardmax", {"x": x}, {"axis": 1}, opset=13)
    np.testing.assert_array_equal(y[0], [[0, 1, 0, 0], [1, 0, 0, 0]])


def test_softmax_fused_with_epilogue(rng):
    """Softmax followed by an elementwise op in one model (exercises fusion of the epilogue)."""
    x = rng.standard_normal((4, 16)).astype(np.float32)
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=-1), helper.make_node("Sqrt", ["s"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], opset=13)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(run_portable(model, {"x": x})[0], np.sqrt(e / e.sum(axis=1, keepdims=True)),
                               rtol=1e-5, atol=1e-6)

