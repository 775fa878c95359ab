"""Shared test helpers: build one-node ONNX models and compare portable with onnx's reference."""

from __future__ import annotations

import os
from typing import Any, Sequence

os.environ.setdefault("PORTABLE_NO_CACHE", "1")  # tests compile fresh; the cache has its own test
os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pytest  # noqa: E402
from onnx import helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402


def make_model(nodes: Sequence[onnx.NodeProto], inputs: dict[str, np.ndarray], outputs: Sequence[str],
               initializers: dict[str, np.ndarray] | None = None, opset: int = 17) -> onnx.ModelProto:
    """A model of ``nodes`` whose graph inputs have the given arrays' shapes and dtypes.

    Output types are left for onnx shape inference to fill in.
    """
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in inputs.items()]
    outs = [helper.make_value_info(o, onnx.TypeProto()) for o in outputs]
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), "test", vis, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception:
        return model
    return inferred


def run_portable(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Compile ``model`` for the host and run it."""
    import portable

    exe = portable.compile(model, target="host", cache=False)
    return exe.run(**inputs)


def run_reference(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnx.reference.ReferenceEvaluator outputs."""
    return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, inputs)]


def assert_matches_reference(model: onnx.ModelProto, inputs: dict[str, np.ndarray],
                             rtol: float = 1e-4, atol: float = 1e-5) -> list[np.ndarray]:
    """Run both and assert outputs agree in shape, dtype and value."""
    expected = run_reference(model, inputs)
    got = run_portable(model, inputs)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape, f"output {i}: shape {g.shape} != reference {e.shape}"
        if e.dtype == np.bool_ or np.issubdtype(e.dtype, np.integer):
            np.testing.assert_array_equal(g, e.astype(g.dtype), err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"output {i}")
    return got


def check_node(op_type: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any] | None = None,
               initializers: dict[str, np.ndarray] | None = None, n_outputs: int = 1, opset: int = 17,
               rtol: float = 1e-4, atol: float = 1e-5) -> list[np.ndarray]:
    """One-node model of ``op_type`` checked against the reference evaluator.

    ``inputs`` become graph inputs (runtime tensors), ``initializers`` compile-time constants;
    the node's inputs are the inputs followed by the initializers, in dict order.
    """
    initializers = initializers or {}
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, list(inputs) + list(initializers), outs, **(attrs or {}))
    model = make_model([node], inputs, outs, initializers, opset)
    return assert_matches_reference(model, inputs, rtol, atol)


@pytest.fixture
def rng() -> np.random.Generator:
    """Seeded random generator."""
    return np.random.default_rng(0)
