"""Benchmark models written with ``onnx.helper`` (no torch): ResNet-18, MobileNetV2, a BERT-style encoder.

Every builder returns a checked ``onnx.ModelProto`` (batch 1, opset 17) whose weights are drawn from a
seeded generator with sensible scales (He init for convolutions, 1/sqrt(fan_in) for dense layers, BN
statistics near identity), so outputs stay finite and two calls with the same seed give the same model.
``light_models()`` lists the nine small models shipped with onnx's backend tests.
"""

from __future__ import annotations

import glob
import math
import os
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # opset 17 with IR 8 loads in every onnxruntime >= 1.13


class GraphBuilder:
    """Accumulates nodes and seeded-random initializers, and emits a checked ModelProto."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}

    def fresh(self, prefix: str) -> str:
        """A new unique value name starting with ``prefix``."""
        n = self._count.get(prefix, 0)
        self._count[prefix] = n + 1
        return f"{prefix}_{n}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        """Add ``value`` as an initializer; returns its name."""
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def scalar(self, value: float, prefix: str = "s") -> str:
        """A float32 scalar initializer."""
        return self.const(np.array(value, dtype=np.float32), prefix)

    def op(self, op_type: str, inputs: list[str], prefix: str | None = None, **attrs: object) -> str:
        """Add a single-output node; returns its output name."""
        out = self.fresh(prefix or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.fresh(f"n_{op_type}"), **attrs))
        return out

    def normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        """float32 N(0, std^2) weights."""
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    # ------------------------------------------------------------------ layers
    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, group: int = 1,
             bias: bool = False) -> str:
        """Conv2d with He-initialised weights (no bias by default, as before a BatchNorm)."""
        fan_in = cin // group * k * k
        w = self.const(self.normal((cout, cin // group, k, k), math.sqrt(2.0 / fan_in)), "conv_w")
        ins = [x, w]
        if bias:
            ins.append(self.const(self.normal((cout,), 0.01), "conv_b"))
        return self.op("Conv", ins, "conv", kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad, pad, pad, pad], group=group, dilations=[1, 1])

    def batchnorm(self, x: str, c: int) -> str:
        """Inference BatchNormalization with statistics near identity (gamma~U(.5,1.5), var~U(.5,1.5))."""
        r = self.rng
        gamma = self.const(r.uniform(0.5, 1.5, c).astype(np.float32), "bn_gamma")
        beta = self.const((r.standard_normal(c) * 0.1).astype(np.float32), "bn_beta")
        mean = self.const((r.standard_normal(c) * 0.1).astype(np.float32), "bn_mean")
        var = self.const(r.uniform(0.5, 1.5, c).astype(np.float32), "bn_var")
        return self.op("BatchNormalization", [x, gamma, beta, mean, var], "bn", epsilon=1e-5)

    def relu6(self, x: str) -> str:
        """ReLU6 as Clip(x, 0, 6) (min/max as inputs since opset 11)."""
        return self.op("Clip", [x, self.scalar(0.0, "clip_min"), self.scalar(6.0, "clip_max")], "relu6")

    def dense(self, x: str, fan_in: int, fan_out: int) -> str:
        """MatMul + Add with LeCun-scaled weights (x is [..., fan_in])."""
        w = self.const(self.normal((fan_in, fan_out), 1.0 / math.sqrt(fan_in)), "dense_w")
        b = self.const(self.normal((fan_out,), 0.02), "dense_b")
        return self.op("Add", [self.op("MatMul", [x, w], "matmul"), b], "dense")

    def gemm_head(self, x: str, fan_in: int, classes: int) -> str:
        """Classifier Gemm(x, W^T) + b as exported by torch (transB=1)."""
        w = self.const(self.normal((classes, fan_in), 1.0 / math.sqrt(fan_in)), "fc_w")
        b = self.const(self.normal((classes,), 0.01), "fc_b")
        return self.op("Gemm", [x, w, b], "logits", transB=1)

    def build(self, name: str, inputs: list[onnx.ValueInfoProto], output: str,
              out_shape: list[int]) -> onnx.ModelProto:
        """Finish the graph with a single float32 output and run the ONNX checker on it."""
        y = helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)
        graph = helper.make_graph(self.nodes, name, inputs, [y], initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="portable-benchmarks")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


# ---------------------------------------------------------------------------------------- ResNet-18
def _basic_block(b: GraphBuilder, x: str, cin: int, cout: int, stride: int) -> str:
    """torchvision BasicBlock: conv3x3-BN-ReLU-conv3x3-BN (+ 1x1/stride downsample) + ReLU."""
    y = b.op("Relu", [b.batchnorm(b.conv(x, cin, cout, 3, stride, 1), cout)])
    y = b.batchnorm(b.conv(y, cout, cout, 3, 1, 1), cout)
    short = x
    if stride != 1 or cin != cout:
        short = b.batchnorm(b.conv(x, cin, cout, 1, stride, 0), cout)
    return b.op("Relu", [b.op("Add", [y, short], "residual")])


def resnet18(seed: int = 0, image: int = 224, classes: int = 1000) -> onnx.ModelProto:
    """ResNet-18 in torchvision's layout, input ``input`` [1, 3, image, image] -> [1, classes]."""
    b = GraphBuilder(seed)
    x = b.op("Relu", [b.batchnorm(b.conv("input", 3, 64, 7, 2, 3), 64)])
    x = b.op("MaxPool", [x], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        x = _basic_block(b, x, cin, cout, stride)
        x = _basic_block(b, x, cout, cout, 1)
        cin = cout
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x], "gap")], "flat", axis=1)
    out = b.gemm_head(x, 512, classes)
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, image, image])
    return b.build("resnet18", [inp], out, [1, classes])


# ---------------------------------------------------------------------------------------- MobileNetV2
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # (expand t, channels c, repeats n, stride s)


def _inverted_residual(b: GraphBuilder, x: str, cin: int, cout: int, stride: int, expand: int) -> str:
    """1x1 expand-BN-ReLU6 (if expand>1), depthwise 3x3-BN-ReLU6, 1x1 project-BN, + x when shapes match."""
    hidden = cin * expand
    y = x
    if expand != 1:
        y = b.relu6(b.batchnorm(b.conv(y, cin, hidden, 1), hidden))
    y = b.relu6(b.batchnorm(b.conv(y, hidden, hidden, 3, stride, 1, group=hidden), hidden))
    y = b.batchnorm(b.conv(y, hidden, cout, 1), cout)
    if stride == 1 and cin == cout:
        y = b.op("Add", [y, x], "residual")
    return y


def mobilenet_v2(seed: int = 0, image: int = 224, classes: int = 1000) -> onnx.ModelProto:
    """MobileNetV2 (width 1.0), input ``input`` [1, 3, image, image] -> [1, classes]."""
    b = GraphBuilder(seed)
    x = b.relu6(b.batchnorm(b.conv("input", 3, 32, 3, 2, 1), 32))
    cin = 32
    for t, c, n, s in MOBILENET_V2_SETTINGS:
        for i in range(n):
            x = _inverted_residual(b, x, cin, c, s if i == 0 else 1, t)
            cin = c
    x = b.relu6(b.batchnorm(b.conv(x, cin, 1280, 1), 1280))
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x], "gap")], "flat", axis=1)
    out = b.gemm_head(x, 1280, classes)
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, image, image])
    return b.build("mobilenet_v2", [inp], out, [1, classes])


# ---------------------------------------------------------------------------------------- Transformer
def _layernorm(b: GraphBuilder, x: str, hidden: int) -> str:
    """LayerNormalization over the last axis (opset 17 op) with gamma~U(.8,1.2), small beta."""
    gamma = b.const(b.rng.uniform(0.8, 1.2, hidden).astype(np.float32), "ln_gamma")
    beta = b.const(b.normal((hidden,), 0.02), "ln_beta")
    return b.op("LayerNormalization", [x, gamma, beta], "ln", axis=-1, epsilon=1e-5)


def _gelu(b: GraphBuilder, x: str) -> str:
    """Exact GELU written out: x * 0.5 * (1 + Erf(x / sqrt(2)))."""
    erf = b.op("Erf", [b.op("Div", [x, b.scalar(math.sqrt(2.0), "sqrt2")], "gelu_div")], "gelu_erf")
    one_plus = b.op("Add", [erf, b.scalar(1.0, "one")], "gelu_add")
    return b.op("Mul", [b.op("Mul", [x, b.scalar(0.5, "half")], "gelu_half"), one_plus], "gelu")


def _attention(b: GraphBuilder, x: str, seq: int, hidden: int, heads: int) -> str:
    """Multi-head self-attention: Q/K/V projections, split heads, softmax(QK^T/sqrt(d))V, merge, project."""
    d = hidden // heads
    split = b.const(np.array([1, seq, heads, d], dtype=np.int64), "heads_shape")
    merge = b.const(np.array([1, seq, hidden], dtype=np.int64), "merge_shape")

    def heads_of(perm: list[int]) -> str:
        return b.op("Transpose", [b.op("Reshape", [b.dense(x, hidden, hidden), split], "split")],
                    "heads", perm=perm)

    q = heads_of([0, 2, 1, 3])  # [1, H, S, d]
    k_t = heads_of([0, 2, 3, 1])  # [1, H, d, S]
    v = heads_of([0, 2, 1, 3])
    scores = b.op("Mul", [b.op("MatMul", [q, k_t], "qk"), b.scalar(1.0 / math.sqrt(d), "scale")], "scores")
    probs = b.op("Softmax", [scores], "probs", axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v], "ctx")], "ctx_t", perm=[0, 2, 1, 3])
    return b.dense(b.op("Reshape", [ctx, merge], "merged"), hidden, hidden)


def transformer_encoder(seed: int = 0, seq: int = 128, hidden: int = 256, heads: int = 4, ffn: int = 1024,
                        layers: int = 2) -> onnx.ModelProto:
    """BERT-style post-LN encoder: input ``hidden_states`` [1, seq, hidden] -> same shape."""
    b = GraphBuilder(seed)
    x = "hidden_states"
    for _ in range(layers):
        x = _layernorm(b, b.op("Add", [x, _attention(b, x, seq, hidden, heads)], "attn_res"), hidden)
        h = b.dense(_gelu(b, b.dense(x, hidden, ffn)), ffn, hidden)
        x = _layernorm(b, b.op("Add", [x, h], "ffn_res"), hidden)
    inp = helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [1, seq, hidden])
    return b.build("transformer_encoder", [inp], x, [1, seq, hidden])


# ---------------------------------------------------------------------------------------- light models
def light_models() -> dict[str, str]:
    """The nine ``light_*.onnx`` models shipped in onnx/backend/test/data/light, name -> path."""
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    paths = sorted(p for p in glob.glob(os.path.join(root, "light_*.onnx")))
    return {os.path.basename(p)[: -len(".onnx")]: p for p in paths}


BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet18": resnet18,
    "mobilenet_v2": mobilenet_v2,
    "transformer": transformer_encoder,
}


def model_names(spec: str) -> list[str]:
    """Expand a comma list of model names; ``light`` means all nine light models."""
    names: list[str] = []
    light = light_models()
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item == "light":
            names.extend(light)
        elif item in BUILDERS or item in light:
            names.append(item)
        else:
            raise ValueError(f"unknown model {item!r}; choose from {', '.join([*BUILDERS, 'light', *light])}")
    return names


def get_model(name: str) -> onnx.ModelProto:
    """Build (or load, for a light model) the model called ``name``."""
    if name in BUILDERS:
        return BUILDERS[name]()
    light = light_models()
    if name in light:
        return onnx.load(light[name])
    raise ValueError(f"unknown model {name!r}")


def real_inputs(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Graph inputs that are not initializers, name -> (shape, dtype); symbolic dims become 1."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim)
        out[vi.name] = (shape, helper.tensor_dtype_to_np_dtype(tt.elem_type))
    return out


def random_inputs(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    """Seeded random feeds for the model's real inputs (standard normal floats, small ints)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in real_inputs(model).items():
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds
