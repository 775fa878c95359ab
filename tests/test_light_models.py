"""The nine 'light' CNNs that ship with onnx (onnx/backend/test/data/light), end to end.

``test_light_model`` reproduces onnx's backend runner: inputs from
``Runner.generate_dummy_data(x, seed=0, name=..., random=False)``, expected outputs from the
``*_output_0.pb`` file next to each model, tolerances from the runner's ``data.json`` for the model
(rtol 1e-3, 2e-3 for DenseNet; atol 1e-7 there, 1e-5 here). Those models' weights are
ConstantOfShape fills, so their expected outputs are nearly uniform; ``test_light_model_random_weights``
therefore also runs two of them with seeded random weights and inputs against onnxruntime.
A model is xfail only while one of its operators is not registered, naming the operators.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import portable
from portable.frontend.onnx_import import INFERENCE_IDENTITY
from portable.ops import REGISTRY

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
          "squeezenet", "vgg19", "zfnet512"]
ATOL = 1e-5


def model_path(name: str) -> str:
    """Path of the light model ``name``."""
    return os.path.join(DATA, "light", f"light_{name}.onnx")


def runner_rtol(name: str) -> float:
    """The rtol onnx's runner uses for this model (its data/real/test_<name>/data.json), default 1e-3."""
    path = os.path.join(DATA, "real", f"test_{name}", "data.json")
    if os.path.exists(path):
        with open(path) as f:
            return float(json.load(f).get("rtol", 1e-3))
    return 1e-3


def missing_ops(model: onnx.ModelProto) -> list[str]:
    """Operator types of ``model`` that portable neither registers nor folds."""
    folded = {"Constant"} | INFERENCE_IDENTITY
    return sorted({n.op_type for n in model.graph.node if n.op_type not in REGISTRY and n.op_type not in folded})


def dummy_inputs(model: onnx.ModelProto, name: str) -> dict[str, np.ndarray]:
    """The inputs onnx's backend runner feeds light models."""
    from onnx.backend.test.runner import Runner

    inits = {i.name for i in model.graph.initializer}
    return {x.name: Runner.generate_dummy_data(x, seed=0, name=name, random=False)
            for x in model.graph.input if x.name not in inits}


def _params() -> list[object]:
    out = []
    for name in MODELS:
        missing = missing_ops(onnx.load(model_path(name), load_external_data=False))
        marks = [pytest.mark.xfail(reason=f"operators not registered yet: {', '.join(missing)}", strict=False)] \
            if missing else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out


@pytest.mark.parametrize("name", _params())
def test_light_model(name: str) -> None:
    """Compile the model and compare with the runner's stored expected output."""
    path = model_path(name)
    model = onnx.load(path)
    feeds = dummy_inputs(model, name)
    expected = numpy_helper.to_array(onnx.load_tensor(path[: -len(".onnx")] + "_output_0.pb"))
    exe = portable.compile(path, cache=False)
    (got,) = exe.run(**feeds)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=runner_rtol(name), atol=ATOL)


def randomize_weights(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Replace each ConstantOfShape weight fill ``c`` by an initializer ``c * U(0, 2)`` of the same shape.

    The scale keeps every layer's magnitude (and the sign of BatchNorm variances) while making
    the weights vary, so the outputs depend on every weight and every spatial position.
    """
    rng = np.random.default_rng(seed)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.ir_version = max(out.ir_version, 4)  # IR >= 4: initializers need not be graph inputs
    keep = []
    for n in out.graph.node:
        if n.op_type != "ConstantOfShape" or n.input[0] not in inits:
            keep.append(n)
            continue
        value = next((numpy_helper.to_array(a.t) for a in n.attribute if a.name == "value"), np.zeros(1, np.float32))
        shape = tuple(int(d) for d in inits[n.input[0]])
        arr = (value.reshape(()) * rng.uniform(0.0, 2.0, shape)).astype(value.dtype)
        out.graph.initializer.append(numpy_helper.from_array(arr, n.output[0]))
    del out.graph.node[:]
    out.graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    live = [i for i in out.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(live)
    gone = set(inits) - used
    inputs = [i for i in out.graph.input if i.name not in gone]  # old IR: initializers listed as inputs
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    return out


@pytest.mark.parametrize("name", ["zfnet512", "shufflenet"])
def test_light_model_random_weights(name: str) -> None:
    """Random weights and inputs, against onnxruntime (LRN/Gemm/MaxPool; grouped conv/BN/channel shuffle)."""
    import onnxruntime as ort

    model = onnx.load(model_path(name))
    missing = missing_ops(model)
    if missing:
        pytest.xfail(f"operators not registered yet: {', '.join(missing)}")
    model = randomize_weights(model, seed=1)
    rng = np.random.default_rng(2)
    feeds = {k: rng.random(v.shape, dtype=np.float32) for k, v in dummy_inputs(model, name).items()}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, feeds)
    assert np.ptp(want) > 10 * ATOL, "randomised model should not give a uniform output"
    (got,) = portable.compile(model, cache=False).run(**feeds)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=ATOL)
