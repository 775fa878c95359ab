"""Data-movement operators against onnx's reference evaluator (and onnxruntime where it lacks a case)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_matches_reference, check_node, make_model, run_portable
from onnx import helper

import portable

INT_MAX = np.iinfo(np.int64).max
I64 = np.int64


def _x(shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-50, 50, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _i(*values: int) -> np.ndarray:
    return np.array(values, dtype=I64)


def _f(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _node_model(op: str, inputs: dict[str, np.ndarray], node_inputs: list[str], attrs: dict[str, Any],
                inits: dict[str, np.ndarray], opset: int, n_outputs: int = 1) -> onnx.ModelProto:
    """One-node model whose node input list is given explicitly ("" for an omitted optional input)."""
    outs = [f"y{k}" for k in range(n_outputs)]
    node = helper.make_node(op, node_inputs, outs, name=f"my_{op.lower()}", **attrs)
    return make_model([node], inputs, outs, inits, opset)


def _invalid_model(op: str, inputs: dict[str, np.ndarray], node_inputs: list[str], attrs: dict[str, Any],
                   inits: dict[str, np.ndarray], opset: int = 13) -> onnx.ModelProto:
    """A one-node model that onnx shape inference would reject: output typed float, shape unknown."""
    node = helper.make_node(op, node_inputs, ["y"], name=f"my_{op.lower()}", **attrs)
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in inputs.items()]
    graph = helper.make_graph([node], "bad", vis, [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n"])],
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _check_with_ort(model: onnx.ModelProto, inputs: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    """Compare portable with onnxruntime (for cases the reference evaluator does not implement)."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, inputs)
    got = run_portable(model, inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=atol)


# --------------------------------------------------------------------------------------- Transpose


@pytest.mark.parametrize("shape,perm", [
    ((2, 3, 4), None), ((2, 3, 4), [1, 0, 2]), ((2, 3, 4), [2, 0, 1]), ((1, 2, 3, 4), [0, 2, 3, 1]),
])
def test_transpose(shape, perm):
    check_node("Transpose", {"x": _x(shape)}, {} if perm is None else {"perm": perm})


@pytest.mark.parametrize("perm", [[1, 0], [0, 0, 1], [0, 1, 3]])
def test_transpose_bad_perm_names_node(perm):
    model = _invalid_model("Transpose", {"x": _x((2, 3, 4))}, ["x"], {"perm": perm}, {}, 17)
    with pytest.raises(portable.ModelError, match="my_transpose.*perm"):
        portable.load_onnx(model)


# --------------------------------------------------------------------------------------- Squeeze / Unsqueeze


@pytest.mark.parametrize("opset,axes", [(11, [0, 2]), (11, None), (11, [-1]), (13, [0, -1]), (13, None)])
def test_squeeze(opset, axes):
    x = _x((1, 3, 1, 1))
    if opset < 13:
        check_node("Squeeze", {"x": x}, {} if axes is None else {"axes": axes}, opset=opset)
    else:
        check_node("Squeeze", {"x": x}, initializers={} if axes is None else {"axes": _i(*axes)}, opset=opset)


def test_squeeze_non_unit_axis_fails():
    model = _invalid_model("Squeeze", {"x": _x((1, 3))}, ["x", "axes"], {}, {"axes": _i(1)})
    with pytest.raises(portable.ModelError, match="my_squeeze"):
        portable.load_onnx(model)


@pytest.mark.parametrize("opset,axes", [(11, [0, 3]), (11, [-1]), (13, [-1, 1]), (13, [0, 1, 4])])
def test_unsqueeze(opset, axes):
    x = _x((2, 3))
    if opset < 13:
        check_node("Unsqueeze", {"x": x}, {"axes": axes}, opset=opset)
    else:
        check_node("Unsqueeze", {"x": x}, initializers={"axes": _i(*axes)}, opset=opset)


# --------------------------------------------------------------------------------------- Concat / Split


@pytest.mark.parametrize("axis,dtype", [(0, np.float32), (-1, np.float32), (1, np.int64)])
def test_concat(axis, dtype):
    shapes = {0: [(1, 3, 2), (2, 3, 2)], -1: [(2, 3, 1), (2, 3, 4), (2, 3, 2)], 1: [(2, 1, 2), (2, 2, 2)]}[axis]
    inputs = {f"x{k}": _x(s, dtype, seed=k) for k, s in enumerate(shapes)}
    check_node("Concat", inputs, {"axis": axis})


def test_concat_with_constant_input():
    check_node("Concat", {"x": _x((2, 3))}, {"axis": 0}, initializers={"c": _x((1, 3), seed=3)})


@pytest.mark.parametrize("opset,attrs,split,n,shape", [
    (11, {"axis": 1, "split": [1, 3]}, None, 2, (2, 4)),
    (11, {"axis": 0}, None, 2, (4, 3)),
    (13, {"axis": -1}, [2, 1, 2], 3, (2, 5)),
    (13, {"axis": 1}, None, 3, (2, 6, 2)),
    (18, {"axis": 0, "num_outputs": 3}, None, 3, (7, 2)),
    (18, {"axis": 1, "num_outputs": 2}, None, 2, (2, 4)),
    (18, {"axis": 1}, [3, 1], 2, (2, 4)),
])
def test_split(opset, attrs, split, n, shape):
    inits = {} if split is None else {"split": _i(*split)}
    check_node("Split", {"x": _x(shape)}, attrs, initializers=inits, n_outputs=n, opset=opset)


def test_split_outputs_feed_other_nodes():
    x = _x((2, 6))
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),
             helper.make_node("Mul", ["a", "b"], ["y"])]
    assert_matches_reference(make_model(nodes, {"x": x}, ["y"], opset=18), {"x": x})


# --------------------------------------------------------------------------------------- Slice


def test_slice_opset9_attributes():
    check_node("Slice", {"x": _x((3, 4, 5))}, {"starts": [1, 0], "ends": [3, -1], "axes": [0, 2]}, opset=9)


def test_slice_opset9_no_axes():
    check_node("Slice", {"x": _x((3, 4))}, {"starts": [-2, 1], "ends": [INT_MAX, 3]}, opset=9)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1, 0], [3, -1], [0, 2], None),
    ([0], [INT_MAX], [1], [2]),
    ([-1], [-INT_MAX], [1], [-1]),
    ([3, -1], [0, 0], [0, -1], [-1, -2]),
    ([-10, 1], [10, 100], None, None),
    ([2], [-100], [2], [-2]),
    ([1, 1, 1], [2, 3, 4], [-3, -2, -1], [1, 1, 2]),
])
def test_slice(starts, ends, axes, steps):
    inits = {"starts": _i(*starts), "ends": _i(*ends)}
    if axes is not None:
        inits["axes"] = _i(*axes)
    if steps is not None:
        inits["steps"] = _i(*steps)
    check_node("Slice", {"x": _x((4, 4, 5))}, initializers=inits, opset=13)


def test_slice_steps_without_axes():
    x = _x((4, 5))
    model = _node_model("Slice", {"x": x}, ["x", "s", "e", "", "st"], {},
                        {"s": _i(0, 4), "e": _i(4, 0), "st": _i(2, -1)}, 13)
    assert_matches_reference(model, {"x": x})


# --------------------------------------------------------------------------------------- Gather


@pytest.mark.parametrize("axis,indices", [
    (0, _i(2, 0, -1)), (1, np.array([[0, -1], [2, 1]], dtype=I64)), (-1, np.array(-2, dtype=I64)),
    (2, np.array([3, 0], dtype=np.int32)),
])
def test_gather_runtime_indices(axis, indices):
    check_node("Gather", {"x": _x((3, 4, 5)), "i": indices}, {"axis": axis})


@pytest.mark.parametrize("indices", [_i(1, -1, 0), np.array(-1, dtype=I64), np.array([[2], [0]], dtype=I64)])
def test_gather_constant_indices(indices):
    check_node("Gather", {"x": _x((3, 4), np.int64)}, {"axis": 0}, initializers={"i": indices})


def test_gather_elements_smaller_indices():
    # indices smaller than data off the axis: legal ONNX the reference evaluator rejects; onnxruntime is the oracle
    x, i = _x((3, 4)), np.array([[1, -1], [0, 3]], dtype=I64)
    _check_with_ort(_node_model("GatherElements", {"x": x, "i": i}, ["x", "i"], {"axis": 1}, {}, 13), {"x": x, "i": i})


def test_gather_float_indices_fail():
    model = _invalid_model("Gather", {"x": _x((3, 4)), "i": _f(1.0)}, ["x", "i"], {}, {})
    with pytest.raises(portable.ModelError, match="my_gather"):
        portable.load_onnx(model)


@pytest.mark.parametrize("axis,indices", [
    (0, np.array([[1, 2, 0], [2, 0, -1]], dtype=I64)),
    (1, np.array([[1, -1], [0, 0], [2, -3]], dtype=I64)),
    (-1, np.array([[0, 2, 1], [2, 1, 1], [1, -3, 0]], dtype=np.int32)),
])
def test_gather_elements(axis, indices):
    check_node("GatherElements", {"x": _x((3, 3)), "i": indices}, {"axis": axis})


# --------------------------------------------------------------------------------------- Expand / Tile


@pytest.mark.parametrize("xshape,shape", [((3, 1), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((1, 4), (3, 1)), ((3,), (3,))])
def test_expand(xshape, shape):
    check_node("Expand", {"x": _x(xshape)}, initializers={"shape": _i(*shape)}, opset=13)


def test_expand_incompatible_fails():
    model = _invalid_model("Expand", {"x": _x((2, 3))}, ["x", "s"], {}, {"s": _i(4, 3)})
    with pytest.raises(portable.ModelError, match="my_expand"):
        portable.load_onnx(model)


@pytest.mark.parametrize("shape,repeats", [((2, 3), (2, 1)), ((1, 2, 3), (3, 2, 2))])
def test_tile(shape, repeats):
    check_node("Tile", {"x": _x(shape)}, initializers={"r": _i(*repeats)}, opset=13)


# --------------------------------------------------------------------------------------- Pad


@pytest.mark.parametrize("mode,pads,value", [
    ("constant", [0, 1, 2, 1, 0, 0], 1.5), ("reflect", [1, 2, 0, 2, 1, 3], None), ("edge", [0, 0, 3, 1, 2, 0], None),
])
def test_pad_opset2_attributes(mode, pads, value):
    attrs: dict[str, Any] = {"mode": mode, "pads": pads}
    if value is not None:
        attrs["value"] = value
    check_node("Pad", {"x": _x((2, 3, 4))}, attrs, opset=9)


@pytest.mark.parametrize("opset,mode,pads,value", [
    (11, "constant", [1, 0, 2, 3], None),
    (13, "constant", [1, 2, 0, 1], -2.0),
    (13, "reflect", [3, 2, 1, 3], None),
    (13, "edge", [2, 0, 0, 3], None),
    (19, "wrap", [1, 2, 3, 2], None),
    (19, "wrap", [4, 9, 7, 1], None),
    (13, "reflect", [5, 1, 2, 7], None),
    (13, "edge", [4, 5, 6, 7], None),
])
def test_pad_inputs(opset, mode, pads, value):
    inits = {"pads": _i(*pads)}
    if value is not None:
        inits["v"] = np.array(value, dtype=np.float32)
    check_node("Pad", {"x": _x((3, 4))}, {"mode": mode}, initializers=inits, opset=opset)


def test_pad_runtime_constant_value():
    x, v = _x((2, 3)), np.array(7.0, dtype=np.float32)
    model = _node_model("Pad", {"x": x, "v": v}, ["x", "pads", "v"], {}, {"pads": _i(1, 1, 0, 2)}, 13)
    assert_matches_reference(model, {"x": x, "v": v})


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
def test_pad_opset18_axes(mode):
    x = _x((2, 3, 4))
    model = _node_model("Pad", {"x": x}, ["x", "pads", "", "axes"], {"mode": mode},
                        {"pads": _i(1, 2, 2, 0), "axes": _i(-1, 0)}, 18)
    assert_matches_reference(model, {"x": x})


@pytest.mark.parametrize("mode,pads", [("constant", [-1, 2, 1, -2]), ("edge", [2, -1, -1, 1])])
def test_pad_negative_crops(mode, pads):
    # numpy (hence the reference evaluator) rejects negative pads; onnxruntime is the oracle here
    x = _x((4, 5))
    model = _node_model("Pad", {"x": x}, ["x", "pads"], {"mode": mode}, {"pads": _i(*pads)}, 13)
    _check_with_ort(model, {"x": x})


# --------------------------------------------------------------------------------------- Resize / Upsample


@pytest.mark.parametrize("nearest_mode,coord,scales", [
    ("round_prefer_floor", "half_pixel", (1, 1, 1.5, 2.0)), ("round_prefer_floor", "asymmetric", (1, 1, 0.6, 1.7)),
    ("round_prefer_ceil", "align_corners", (1, 1, 0.6, 1.7)), ("round_prefer_ceil", "asymmetric", (1, 1, 1.5, 3.0)),
    ("floor", "pytorch_half_pixel", (1, 1, 2.5, 0.5)), ("floor", "half_pixel", (1, 1, 0.75, 1.25)),
    ("ceil", "asymmetric", (1, 1, 1.25, 3.0)), ("ceil", "align_corners", (1, 1, 2.5, 0.5)),
])
def test_resize_nearest_scales(nearest_mode, coord, scales):
    x = _x((1, 2, 4, 5))
    model = _node_model("Resize", {"x": x}, ["x", "", "scales"],
                        {"mode": "nearest", "nearest_mode": nearest_mode, "coordinate_transformation_mode": coord},
                        {"scales": _f(*scales)}, 13)
    assert_matches_reference(model, {"x": x})


@pytest.mark.parametrize("coord,scales", [
    ("half_pixel", (1, 1, 2.0, 0.75)), ("asymmetric", (1, 1, 0.5, 1.5)), ("align_corners", (1, 1, 1.7, 0.6)),
    ("pytorch_half_pixel", (1, 1, 0.25, 2.0)), ("half_pixel_symmetric", (1, 1, 1.7, 0.6)),
])
def test_resize_linear_scales(coord, scales):
    x = _x((1, 2, 4, 4))
    opset = 19 if coord == "half_pixel_symmetric" else 13
    model = _node_model("Resize", {"x": x}, ["x", "", "scales"],
                        {"mode": "linear", "coordinate_transformation_mode": coord}, {"scales": _f(*scales)}, opset)
    assert_matches_reference(model, {"x": x})


@pytest.mark.parametrize("mode,coord", [("linear", "align_corners"), ("nearest", "half_pixel"),
                                        ("linear", "pytorch_half_pixel")])
def test_resize_opset11_sizes(mode, coord):
    x = _x((2, 3, 5, 4))
    model = _node_model("Resize", {"x": x}, ["x", "roi", "scales", "sizes"],
                        {"mode": mode, "coordinate_transformation_mode": coord},
                        {"roi": _f(), "scales": _f(), "sizes": _i(2, 3, 7, 1)}, 11)
    assert_matches_reference(model, {"x": x})


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_opset18_axes_and_aspect_policy(policy):
    x = _x((1, 2, 4, 6))
    model = _node_model("Resize", {"x": x}, ["x", "", "", "sizes"],
                        {"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": policy},
                        {"sizes": _i(9, 5)}, 18)
    assert_matches_reference(model, {"x": x})


def test_resize_opset18_axes_scales_nearest_int():
    x = _x((2, 3, 4), np.int64)
    model = _node_model("Resize", {"x": x}, ["x", "", "scales"], {"mode": "nearest", "axes": [2]},
                        {"scales": _f(1.5)}, 18)
    assert_matches_reference(model, {"x": x})


@pytest.mark.parametrize("mode,scales", [("nearest", (1, 1, 0.6, 1.7)), ("nearest", (1, 1, 2, 3)),
                                         ("linear", (1, 1, 0.5, 1.5))])
def test_resize_opset10(mode, scales):
    # the reference evaluator cannot run opset-10 Resize; onnxruntime is the oracle
    x = _x((1, 2, 4, 4))
    model = _node_model("Resize", {"x": x}, ["x", "s"], {"mode": mode}, {"s": _f(*scales)}, 10)
    _check_with_ort(model, {"x": x})


def test_resize_unsupported_mode_names_node():
    x = _x((1, 1, 4, 4))
    model = _invalid_model("Resize", {"x": x}, ["x", "", "scales"], {"mode": "cubic"}, {"scales": _f(1, 1, 2, 2)})
    with pytest.raises(portable.ModelError, match="my_resize.*cubic"):
        portable.load_onnx(model)


def test_upsample_opset9_nearest():
    check_node("Upsample", {"x": _x((1, 2, 3, 4))}, {"mode": "nearest"},
               initializers={"s": _f(1, 1, 2, 3)}, opset=9)


def test_upsample_opset7_attribute():
    # the reference evaluator only knows the opset-9 form (scales as an input)
    x = _x((1, 2, 3, 4))
    model = _node_model("Upsample", {"x": x}, ["x"], {"mode": "nearest", "scales": [1.0, 1.0, 3.0, 2.0]}, {}, 7)
    _check_with_ort(model, {"x": x})


@pytest.mark.parametrize("mode,scales", [("linear", (1, 1, 2, 1.5)), ("nearest", (1, 1, 1.5, 2.5))])
def test_upsample_vs_onnxruntime(mode, scales):
    x = _x((1, 2, 3, 4))
    model = _node_model("Upsample", {"x": x}, ["x", "s"], {"mode": mode}, {"s": _f(*scales)}, 9)
    _check_with_ort(model, {"x": x})


# --------------------------------------------------------------------------------------- DepthToSpace / SpaceToDepth


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    check_node("DepthToSpace", {"x": _x((2, 8, 2, 3))}, {"blocksize": 2, "mode": mode}, opset=13)


@pytest.mark.parametrize("blocksize", [2, 3])
def test_space_to_depth(blocksize):
    check_node("SpaceToDepth", {"x": _x((1, 2, 6, 6))}, {"blocksize": blocksize}, opset=13)


def test_depth_to_space_bad_channels_names_node():
    model = _invalid_model("DepthToSpace", {"x": _x((1, 6, 2, 2))}, ["x"], {"blocksize": 2}, {})
    with pytest.raises(portable.ModelError, match="my_depthtospace"):
        portable.load_onnx(model)


# --------------------------------------------------------------------------------------- shape folding


def test_shape_gather_concat_reshape_folds():
    """A Reshape whose target is computed from the input's Shape folds to a constant at import."""
    x = _x((2, 3, 4))
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    inits = [onnx.numpy_helper.from_array(_i(0), "zero"), onnx.numpy_helper.from_array(_i(-1), "minus1")]
    graph = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", "n"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    graph = portable.load_onnx(model)
    assert [n.op for n in graph.nodes] == ["Reshape", "Relu"]
    assert graph.constants[graph.nodes[0].inputs[1]].tolist() == [2, -1]
    got = assert_matches_reference(model, {"x": x})
    assert got[0].shape == (2, 12)


def test_injective_chain_fuses_correctly():
    """Several movement ops in a row (fused into one kernel) still match the reference."""
    x, idx = _x((2, 3, 4)), np.array([2, -1, 0], dtype=I64)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Slice", ["t", "s", "e", "a", "st"], ["sl"]),
        helper.make_node("Concat", ["sl", "t"], ["c"], axis=1),
        helper.make_node("Gather", ["c", "i"], ["g"], axis=2),
        helper.make_node("Pad", ["g", "pads"], ["p"], mode="reflect"),
        helper.make_node("Relu", ["p"], ["y"]),
    ]
    inits = {"s": _i(-1), "e": _i(-INT_MAX), "a": _i(1), "st": _i(-2), "pads": _i(0, 1, 2, 0, 2, 1)}
    model = make_model(nodes, {"x": x, "i": idx}, ["y"], inits, opset=13)
    assert_matches_reference(model, {"x": x, "i": idx})
