"""ONNX backend node conformance tests, generated in memory from onnx's own test-case generator.

The onnx wheel ships no node test data, but ``onnx.backend.test.case.node`` builds every case
(model, inputs, expected outputs) when imported. One test is generated per case whose operators
are all registered in ``portable.ops.REGISTRY`` (or folded away by the importer); cases outside
portable's scope by design (dtypes, sequence/optional types, training mode) are skipped with a
specific reason, and so are cases whose attribute variant portable deliberately rejects at load
time (``UnsupportedAttributeError``, e.g. Resize mode=cubic), with the error's text. Outputs are
compared like onnx's backend runner: same shape and dtype, then ``assert_allclose`` with the
case's tolerances (rtol 1e-3, atol 1e-7).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import portable
from portable.errors import UnsupportedAttributeError
from portable.frontend.onnx_import import ALWAYS_FOLD, INFERENCE_IDENTITY
from portable.ops import REGISTRY

#: op types the importer removes or evaluates itself (besides registered ones)
FOLDED = {"Constant"} | INFERENCE_IDENTITY
#: element types portable compiles; others are out of scope by design
SUPPORTED_DTYPES = {"float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                    "uint64", "bool"}


@functools.lru_cache(maxsize=1)
def all_cases() -> dict[str, Any]:
    """name -> onnx TestCase for every node test the installed onnx generates (computed once)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return {c.name: c for c in cases}


def _elem_dtype(elem_type: int) -> str:
    """numpy-style name of an ONNX element type ('unknown(N)' for types numpy cannot hold)."""
    try:
        return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:
        return f"unknown({elem_type})"


def _onnx_type_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def _value_types(model: onnx.ModelProto) -> list[tuple[str, onnx.TypeProto]]:
    g = model.graph
    return [(v.name, v.type) for v in list(g.input) + list(g.output) + list(g.value_info)]


def _node_elem_types(model: onnx.ModelProto) -> list[int]:
    """Element types named inside nodes: Cast targets and Constant values."""
    out: list[int] = []
    for n in model.graph.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to":
                out.append(a.i)
            elif a.type == onnx.AttributeProto.TENSOR:
                out.append(a.t.data_type)
    return out


def _training_reason(case: Any) -> str | None:
    """Why a case exercises training-mode semantics (None if it does not)."""
    model = case.model
    feeds = dict(zip([i.name for i in model.graph.input], case.data_sets[0][0]))
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "BatchNormalization" and attrs.get("training_mode", 0):
            return "BatchNormalization training_mode=1 (batch statistics) belongs to the training compiler"
        if n.op_type == "Dropout" and len(n.input) > 2 and n.input[2]:
            flag = feeds.get(n.input[2])
            if flag is None or bool(np.asarray(_as_array(flag))):
                return "Dropout with training_mode=True draws a random mask; inference only aliases it"
    return None


def skip_reason(case: Any) -> str | None:
    """The specific reason a case is out of portable's scope by design, or None if it is in scope."""
    for name, tp in _value_types(case.model):
        kind = tp.WhichOneof("value")
        if kind != "tensor_type":
            return f"value {name!r} has {kind} type; portable compiles tensors only (no sequence/optional/map)"
        dt = _elem_dtype(tp.tensor_type.elem_type)
        if dt not in SUPPORTED_DTYPES:
            return (f"value {name!r} has element type {_onnx_type_name(tp.tensor_type.elem_type)}; "
                    "portable compiles float32/float64/integer/bool tensors only")
    for et in _node_elem_types(case.model):
        if _elem_dtype(et) not in SUPPORTED_DTYPES:
            return (f"a node uses element type {_onnx_type_name(et)}; "
                    "portable compiles float32/float64/integer/bool tensors only")
    for arr in list(case.data_sets[0][0]) + list(case.data_sets[0][1]):
        if isinstance(arr, (list, tuple)) or arr is None:
            return "inputs/outputs are sequences or optionals; portable compiles tensors only"
    return _training_reason(case)


def in_registry(case: Any) -> bool:
    """Whether every operator of the case is registered (or folded by the importer)."""
    return all(n.domain in ("", "ai.onnx") and (n.op_type in REGISTRY or n.op_type in FOLDED)
               for n in case.model.graph.node)


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    return np.asarray(x)


def freeze_static_inputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Turn graph inputs that portable needs at compile time into initializers.

    portable compiles static shapes, so inputs an operator declares in ``const_inputs`` (a
    Reshape's shape, ...) and every input of an operator the importer always folds (Range,
    ConstantOfShape...) must be constants, and so must everything they are computed from. The
    backend tests feed them as graph inputs; their values are known, so they become initializers
    holding exactly the test's values.
    """
    static: set[str] = set()
    for n in reversed(model.graph.node):  # reverse topological order: a value's consumers come first
        if any(o in static for o in n.output):  # a static value needs static inputs
            static.update(i for i in n.input if i)
        op = REGISTRY.get(n.op_type)
        idxs = range(len(n.input)) if n.op_type in ALWAYS_FOLD else (op.const_inputs if op else ())
        static.update(n.input[i] for i in idxs if i < len(n.input) and n.input[i])
    graph_inputs = [i.name for i in model.graph.input]
    frozen = [name for name in graph_inputs if name in static]
    if not frozen:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [vi for vi in out.graph.input if vi.name not in static]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    out.graph.initializer.extend(numpy_helper.from_array(feeds[name], name) for name in frozen)
    for name in frozen:
        del feeds[name]
    return out


def _params() -> list[Any]:
    out = []
    for name, case in all_cases().items():
        if not in_registry(case):
            continue
        reason = skip_reason(case)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out


@pytest.mark.parametrize("name", _params())
def test_node(name: str) -> None:
    """Compile the case's model, run it on the case's inputs, compare like onnx's backend runner."""
    case = all_cases()[name]
    inputs, expected = case.data_sets[0]
    model = case.model
    feeds = {vi.name: _as_array(x) for vi, x in zip(model.graph.input, inputs)}
    model = freeze_static_inputs(model, feeds)
    try:
        exe = portable.compile(model, target="host", cache=False)
    except UnsupportedAttributeError as exc:  # a variant portable rejects on purpose, at load time
        pytest.skip(str(exc))
    got = exe.run(**feeds)
    want = [_as_array(e) for e in expected]
    assert len(got) == len(want), f"{len(got)} outputs, expected {len(want)}"
    for i, (g, e) in enumerate(zip(got, want)):
        assert g.shape == e.shape, f"output {i}: shape {g.shape} != expected {e.shape}"
        assert g.dtype == e.dtype, f"output {i}: dtype {g.dtype} != expected {e.dtype}"
        np.testing.assert_allclose(g, e, rtol=case.rtol, atol=case.atol, err_msg=f"output {i}")


# ---------------------------------------------------------------------------------------------
# importer paths the generated cases rely on, checked on models of their own


Sig = dict[str, tuple[int, list[Any]]]


def _model(nodes: list[onnx.NodeProto], inputs: Sig, outputs: Sig, opset: int,
           inits: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A small model; ``inputs`` and ``outputs`` map name -> (element type, shape)."""
    vis = [onnx.helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()]
    outs = [onnx.helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()]
    graph = onnx.helper.make_graph(nodes, "g", vis, outs,
                                   [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])


def test_empty_values_become_constants() -> None:
    """An empty Slice feeds a Concat and an empty-set ReduceSum; both fold, the rest compiles."""
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    nodes = [onnx.helper.make_node("Slice", ["x", "st", "en", "ax"], ["e"]),
             onnx.helper.make_node("Concat", ["e", "x"], ["c"], axis=1),
             onnx.helper.make_node("ReduceSum", ["e", "ax"], ["s"], keepdims=1),
             onnx.helper.make_node("Add", ["c", "s"], ["y"])]
    inits = {"st": np.array([5]), "en": np.array([9]), "ax": np.array([1])}
    f = onnx.TensorProto.FLOAT
    model = _model(nodes, {"x": (f, [4, 3])}, {"y": (f, [4, 3]), "e": (f, [4, 0])}, 17, inits)
    y, e = portable.compile(model, target="host", cache=False).run(x)
    np.testing.assert_array_equal(y, x)  # Concat with an empty piece, plus a sum over nothing (0)
    assert e.shape == (4, 0) and e.dtype == np.float32


def test_newer_opset_imported_natively_when_conversion_fails(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A Mod fmod=0 on floats (opset 28) cannot go down to an older opset: import it as is, warn."""
    from portable.frontend import onnx_import

    monkeypatch.setattr(onnx_import, "MAX_OPSET", 22)
    a = np.array([5.5, -5.5, 3.0, -0.0, 1.0], np.float32)
    b = np.array([2.0, 2.0, -np.inf, 3.0, -2.0], np.float32)
    f = onnx.TensorProto.FLOAT
    model = _model([onnx.helper.make_node("Mod", ["a", "b"], ["y"], fmod=0)],
                   {"a": (f, [5]), "b": (f, [5])}, {"y": (f, [5])}, 28)
    with caplog.at_level("WARNING", logger="portable.frontend"):
        (y,) = portable.compile(model, target="host", cache=False).run(a, b)
    assert "importing it natively" in caplog.text and "Mod" in caplog.text
    np.testing.assert_array_equal(y, np.mod(a, b))
    np.testing.assert_array_equal(np.signbit(y), np.signbit(np.mod(a, b)))


def test_newer_opset_with_unknown_operator_still_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Native import after a failed conversion needs every operator registered."""
    from portable.frontend import onnx_import

    monkeypatch.setattr(onnx_import, "MAX_OPSET", 22)
    f = onnx.TensorProto.FLOAT
    nodes = [onnx.helper.make_node("Mod", ["a", "a"], ["m"], fmod=0),
             onnx.helper.make_node("STFT", ["m", "step"], ["y"])]
    model = _model(nodes, {"a": (f, [1, 16, 1])}, {"y": (f, [None, None, None, None])}, 28,
                   {"step": np.array(4, np.int64)})
    with pytest.raises(portable.errors.ModelError, match=r"converting it to opset 22 failed.*STFT"):
        portable.load_onnx(model)


def test_unsupported_attribute_error_names_node_and_value() -> None:
    """Resize mode=cubic is rejected at load time with the node, attribute and value."""
    f = onnx.TensorProto.FLOAT
    node = onnx.helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", name="up")
    model = _model([node], {"x": (f, [1, 1, 2, 2])}, {"y": (f, [1, 1, 4, 4])}, 19,
                   {"scales": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(UnsupportedAttributeError, match=r"'up' \(Resize.*mode='cubic'") as info:
        portable.load_onnx(model)
    assert (info.value.op_type, info.value.attribute, info.value.value) == ("Resize", "mode", "cubic")
    assert isinstance(info.value, portable.errors.UnsupportedOperatorError)
