"""Error behaviour: unsupported operators, malformed models, bad run-time inputs, odd input layouts."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from conftest import make_model
from onnx import TensorProto, helper

import portable

F32 = np.float32


def _graph_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
                 outputs: list[onnx.ValueInfoProto], opset: int = 17,
                 extra_opsets: tuple[tuple[str, int], ...] = ()) -> onnx.ModelProto:
    """A model from explicit value infos (no shape inference), with optional extra domains."""
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=opsets)
    model.ir_version = 8
    return model


def _vi(name: str, shape: tuple[int, ...], elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


# ---------------------------------------------------------------- unsupported operators
def _unsupported_model() -> onnx.ModelProto:
    """Relu (supported) followed by three unsupported op types, one of them twice, one custom-domain."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="ok_relu"),
        helper.make_node("Det", ["r"], ["d1"], name="det_a"),
        helper.make_node("Det", ["r"], ["d2"], name="det_b"),
        helper.make_node("NonZero", ["r"], ["nz"], name="nonzero_node"),
        helper.make_node("FancyOp", ["r"], ["f"], name="fancy", domain="com.example"),
    ]
    outs = [_vi("d1", (2,)), _vi("d2", (2,)), _vi("nz", (3, None), TensorProto.INT64), _vi("f", (2, 3, 3))]
    return _graph_model(nodes, [_vi("x", (2, 3, 3))], outs, opset=17, extra_opsets=(("com.example", 1),))


def test_unsupported_ops_listed_in_one_error():
    with pytest.raises(portable.UnsupportedOperatorError) as info:
        portable.load_onnx(_unsupported_model())
    msg = str(info.value)
    for op in ("Det", "NonZero", "FancyOp"):
        assert op in msg, f"{op} missing from: {msg}"
    for node in ("det_a", "det_b", "nonzero_node", "fancy"):
        assert node in msg, f"node {node} missing from: {msg}"
    assert re.search(r"Det \(opset 17\).*'det_a', 'det_b'", msg), msg
    assert re.search(r"NonZero \(opset 17\).*'nonzero_node'", msg), msg
    assert re.search(r"com\.example\.FancyOp \(opset 1\).*'fancy'", msg), msg
    assert "Relu" not in msg and "ok_relu" not in msg
    assert {p[0].split(".")[-1] for p in info.value.problems} == {"Det", "NonZero", "FancyOp"}
    assert isinstance(info.value, portable.PortableError)


def test_unsupported_ops_raised_by_compile_from_bytes():
    with pytest.raises(portable.UnsupportedOperatorError, match="Det"):
        portable.compile(_unsupported_model().SerializeToString(), cache=False)


# ---------------------------------------------------------------- malformed models
def test_bad_bytes():
    with pytest.raises(portable.ModelError, match="not a valid ONNX model"):
        portable.load_onnx(b"\x08\x07garbage-that-is-not-protobuf\xff\xff\xff")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(portable.ModelError, match=re.escape(str(path))):
        portable.load_onnx(str(path))


def test_not_a_model_object():
    with pytest.raises(portable.ModelError, match="path, bytes or onnx.ModelProto"):
        portable.load_onnx(12345)


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x00\x01\x02 not a model \xff\xfe")
    with pytest.raises(portable.ModelError):
        portable.load_onnx(str(path))


def test_fails_checker():
    # Add takes two inputs; the checker rejects a one-input Add
    node = helper.make_node("Add", ["x"], ["y"], name="bad_add")
    model = _graph_model([node], [_vi("x", (2, 3))], [_vi("y", (2, 3))])
    with pytest.raises(portable.ModelError, match="checker"):
        portable.load_onnx(model)


def test_input_produced_by_no_node():
    node = helper.make_node("Add", ["x", "ghost"], ["y"], name="add_ghost")
    model = _graph_model([node], [_vi("x", (2, 3))], [_vi("y", (2, 3))])
    with pytest.raises(portable.ModelError, match="ghost"):
        portable.load_onnx(model)


def test_input_produced_by_no_node_unchecked_path():
    """The importer's own check (behind the checker) names the node and the missing value."""
    from portable.frontend.onnx_import import _Importer

    node = helper.make_node("Add", ["x", "ghost"], ["y"], name="add_ghost")
    model = _graph_model([node], [_vi("x", (2, 3))], [_vi("y", (2, 3))])
    with pytest.raises(portable.ModelError, match=r"add_ghost.*'ghost'"):
        _Importer(model, None).run()


def test_output_produced_by_no_node():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    model = _graph_model([node], [_vi("x", (2, 3))], [_vi("y", (2, 3)), _vi("dangling", (2, 3))])
    with pytest.raises(portable.ModelError, match="dangling"):
        portable.load_onnx(model)


def test_shape_error_names_node():
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="mm_bad")
    model = _graph_model([node], [_vi("a", (2, 3)), _vi("b", (4, 5))], [_vi("y", (2, 5))])
    with pytest.raises(portable.ModelError, match="mm_bad"):
        portable.load_onnx(model)


# ---------------------------------------------------------------- run-time inputs
@pytest.fixture(scope="module")
def two_input_exe():
    """Compiled y = a * b + a with a: float32 (2, 3), b: float32 (3,)."""
    a, b = np.zeros((2, 3), F32), np.zeros((3,), F32)
    nodes = [helper.make_node("Mul", ["a", "b"], ["m"]), helper.make_node("Add", ["m", "a"], ["y"])]
    return portable.compile(make_model(nodes, {"a": a, "b": b}, ["y"]), cache=False)


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((2, 3)).astype(F32), rng.standard_normal(3).astype(F32)


def test_run_ok_positional_named_dict(two_input_exe, rng):
    a, b = _inputs(rng)
    want = a * b + a
    for got in (two_input_exe.run(a, b), two_input_exe.run(a=a, b=b), two_input_exe.run({"a": a, "b": b})):
        np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-6)


def test_wrong_input_count(two_input_exe, rng):
    a, _ = _inputs(rng)
    with pytest.raises(portable.InputError, match=r"2 input\(s\).*'a'.*'b'.*got 1"):
        two_input_exe.run(a)


def test_unknown_input_name(two_input_exe, rng):
    a, b = _inputs(rng)
    with pytest.raises(portable.InputError, match=r"unknown.*'c'.*\['a', 'b'\]"):
        two_input_exe.run(a=a, b=b, c=b)


def test_missing_input_name(two_input_exe, rng):
    a, _ = _inputs(rng)
    with pytest.raises(portable.InputError, match=r"missing.*'b'"):
        two_input_exe.run(a=a)


def test_wrong_dtype(two_input_exe, rng):
    a, b = _inputs(rng)
    with pytest.raises(portable.InputError, match=r"'b'.*expected dtype float32.*float64"):
        two_input_exe.run(a, b.astype(np.float64))


def test_wrong_shape(two_input_exe, rng):
    a, b = _inputs(rng)
    with pytest.raises(portable.InputError, match=r"'a'.*expected shape \(2, 3\).*\(3, 2\)"):
        two_input_exe.run(a.T.copy(), b)


def test_error_leaves_executable_usable(two_input_exe, rng):
    a, b = _inputs(rng)
    with pytest.raises(portable.InputError):
        two_input_exe.run(a, b[:2])
    np.testing.assert_allclose(two_input_exe.run(a, b)[0], a * b + a, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- odd memory layouts
@pytest.fixture(scope="module")
def layout_exe():
    """Compiled y = x * 2 + z for x, z: float32 (4, 6) (a transposing layout would show up)."""
    x = np.zeros((4, 6), F32)
    nodes = [helper.make_node("Mul", ["x", "two"], ["m"]), helper.make_node("Add", ["m", "z"], ["y"])]
    return portable.compile(make_model(nodes, {"x": x, "z": x}, ["y"], {"two": np.array(2.0, F32)}), cache=False)


def test_misaligned_input(layout_exe, rng):
    xv = rng.standard_normal((4, 6)).astype(F32)
    zv = rng.standard_normal((4, 6)).astype(F32)
    x = np.frombuffer(b"\x00" * 4 + xv.tobytes(), dtype=F32, offset=4).reshape(4, 6)
    z = np.frombuffer(b"\x00" + zv.tobytes(), dtype=F32, offset=1).reshape(4, 6)  # 1-byte offset
    assert not z.flags.aligned
    (y,) = layout_exe.run(x, z)
    np.testing.assert_allclose(y, xv * 2 + zv, rtol=1e-6)


def test_non_contiguous_inputs(layout_exe, rng):
    big = rng.standard_normal((4, 12)).astype(F32)
    x = big[:, ::2]
    z = np.asfortranarray(rng.standard_normal((4, 6)).astype(F32))
    assert not x.flags.c_contiguous and not z.flags.c_contiguous
    (y,) = layout_exe.run(x=x, z=z)
    np.testing.assert_allclose(y, np.array(x) * 2 + np.array(z), rtol=1e-6)


def test_inputs_not_modified_and_outputs_fresh(layout_exe, rng):
    x = rng.standard_normal((4, 6)).astype(F32)
    z = rng.standard_normal((4, 6)).astype(F32)
    x0, z0 = x.copy(), z.copy()
    (y1,) = layout_exe.run(x, z)
    (y2,) = layout_exe.run(z, x)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_allclose(y1, x0 * 2 + z0, rtol=1e-6)
    np.testing.assert_allclose(y2, z0 * 2 + x0, rtol=1e-6)
