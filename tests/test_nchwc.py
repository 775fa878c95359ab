"""The NCHWc layout pass: convolution chains in channel-blocked layout give the reference's numbers.

Every model here is checked against onnxruntime (ReferenceEvaluator is too slow for these
convolution chains), for the AVX-512 block (16) and the AVX2 block (8), and the tests check that
the pass really fired (the plan runs NCHWc kernels) so a silent fallback to NCHW cannot pass.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import portable
from portable.compiler.layout import convert_to_nchwc
from portable.compiler.passes import copy_graph
from portable.ops.blocked import pack_conv_weight
from portable.ops.winograd import pack_polyphase_winograd_weight, pack_winograd_weight, transform_matrices
from portable.targets import resolve_target

TARGETS = ["host", "x86-avx2"]


class _Net:
    """Tiny onnx.helper builder: conv/bn-free layers with random weights."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}{self.n}"

    def const(self, arr: np.ndarray) -> str:
        nm = self.name("c")
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), nm))
        return nm

    def op(self, op: str, ins: list[str], **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, s: int = 1, group: int = 1, bias: bool = True,
             **attrs: object) -> str:
        w = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))
        ins = [x, self.const(w)] + ([self.const(self.rng.standard_normal(cout) * 0.1)] if bias else [])
        if "pads" not in attrs and "auto_pad" not in attrs:
            attrs["pads"] = [k // 2] * 4
        return self.op("Conv", ins, strides=[s, s], group=group, **attrs)

    def model(self, x_shape: tuple[int, ...], out: str) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "nchwc", [helper.make_tensor_value_info("x", 1, list(x_shape))],
                              [helper.make_tensor_value_info(out, 1, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return onnx.shape_inference.infer_shapes(m)


def _step_families(exe: portable.Executable) -> list[str]:
    """Template family of every kernel call of the plan, in order."""
    return [exe.plan.kernels[s["kernel"]]["family"] for s in exe.plan.steps]


def _check(model: onnx.ModelProto, x_shape: tuple[int, ...], target: str, min_nchwc: int = 1) -> None:
    x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
    exe = portable.compile(model, target=target, cache=False)
    families = _step_families(exe)
    assert sum(f in ("conv2d_nchwc", "conv2d_winograd_nchwc", "pool_nchwc") for f in families) >= min_nchwc, families
    fallbacks = [k for k, info in exe.plan.kernels.items() if "fallback" in info["knobs"]]
    assert not fallbacks, f"templates fell back to the generic schedule for {fallbacks}"
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = exe.run(x)[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def _residual_cnn() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """First conv on NCHW input, strided conv, max pool with pads, residual add, global pool + gemm."""
    b = _Net()
    y = b.op("Relu", [b.conv("x", 3, 32, k=7, s=2)])
    y = b.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    r = b.op("Relu", [b.conv(y, 32, 32)])
    r = b.conv(r, 32, 32, bias=False)
    y = b.op("Relu", [b.op("Add", [y, r])])
    y = b.op("Relu", [b.conv(y, 32, 64, s=2)])
    y = b.op("AveragePool", [y], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0)
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    w = b.const(b.rng.standard_normal((10, 64)))
    return b.model((1, 3, 40, 40), b.op("Gemm", [y, w], transB=1)), (1, 3, 40, 40)


def _mobile_block() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Padded channel counts (24, 36), depthwise strided conv, Clip (ReLU6), per-channel Mul constant,
    HardSwish, a ceil-mode pool, then a Sigmoid on a padded tensor feeding a convolution."""
    b = _Net(3)
    y = b.op("Clip", [b.conv("x", 3, 24, s=2), b.const(np.array(0.0)), b.const(np.array(6.0))])
    e = b.op("Clip", [b.conv(y, 24, 36, k=1), b.const(np.array(0.0)), b.const(np.array(6.0))])
    d = b.conv(e, 36, 36, k=3, s=2, group=36)
    d = b.op("Mul", [d, b.const(b.rng.uniform(0.5, 1.5, (36, 1, 1)))])
    d = b.op("HardSwish", [d])
    d = b.op("MaxPool", [d], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    s = b.op("Sigmoid", [b.conv(d, 36, 24, k=1)])
    out = b.conv(s, 24, 40, k=3)
    return b.model((1, 3, 30, 30), out), (1, 3, 30, 30)


def _concat_block() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Inception-style channel concat of whole blocks, a Div by a per-channel constant, a 5x5 and 1x1 branch."""
    b = _Net(5)
    y = b.op("Relu", [b.conv("x", 16, 32, k=3)])
    a = b.op("Relu", [b.conv(y, 32, 16, k=1)])
    c = b.op("Relu", [b.conv(y, 32, 32, k=5)])
    p = b.op("MaxPool", [y], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    cat = b.op("Concat", [a, c, p], axis=1)
    cat = b.op("Div", [cat, b.const(b.rng.uniform(1.0, 2.0, (1, 80, 1, 1)))])
    return b.model((1, 16, 15, 15), b.conv(cat, 80, 16, k=1)), (1, 16, 15, 15)


def _dilated_same_pad() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Dilated conv, auto_pad SAME_UPPER, odd sizes, a Softmax forcing a conversion back to NCHW mid-graph."""
    b = _Net(7)
    y = b.conv("x", 8, 16, k=3, dilations=[2, 2], pads=[2, 2, 2, 2])
    y = b.op("Softmax", [y], axis=1)
    y = b.conv(y, 16, 16, k=3, s=2, auto_pad="SAME_UPPER")
    return b.model((2, 8, 13, 11), b.op("LeakyRelu", [y], alpha=0.1)), (2, 8, 13, 11)


def _prime_width() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Output widths 13 and 11 (prime): register tiles with a partial last tile."""
    b = _Net(9)
    y = b.op("Relu", [b.conv("x", 3, 32, k=3)])
    return b.model((1, 3, 13, 13), b.conv(y, 32, 16, k=3, pads=[0, 0, 0, 0])), (1, 3, 13, 13)


def _winograd_chain() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """3x3 stride-1 convolutions taken by Winograd: F(4x4) at 30x30 and 29x29 (partial tiles, an
    asymmetric pad, a padded 24-channel input), F(2x2) at 14x14 with a padded 20-channel output and
    at 7x7 (a partial tile) reading it, batch 2."""
    b = _Net(11)
    y = b.op("Relu", [b.conv("x", 8, 24, k=1)])
    y = b.op("Relu", [b.conv(y, 24, 32)])
    y = b.op("Relu", [b.op("Add", [y, b.conv(y, 32, 32)])])
    y = b.op("Relu", [b.conv(y, 32, 32, pads=[1, 1, 0, 0])])
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.op("MaxPool", [b.op("Relu", [b.conv(y, 32, 20)])], kernel_shape=[2, 2], strides=[2, 2])
    return b.model((2, 8, 30, 30), b.conv(y, 20, 16)), (2, 8, 30, 30)


def _polyphase_stride2() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """3x3 stride-2 convolutions taken as F(4x4, 2x2) over input phases: one reading the NCHW input
    (24 channels: a padded tail at 16 lanes; odd sizes), one reading a blocked value with an
    asymmetric pad (28 x 28 out), batch 2."""
    b = _Net(19)
    y = b.op("Relu", [b.conv("x", 24, 32, k=3, s=2)])
    return b.model((2, 24, 113, 114), b.conv(y, 32, 16, k=3, s=2, pads=[0, 1, 1, 0])), (2, 24, 113, 114)


def _stem_7x7() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """A 7x7 stride-2 first layer on 3 channels (F(4x4, 4x4) over densely packed phases), odd sizes
    (31 x 34 out), batch 2, with ReLU and a max pool after it (blocked)."""
    b = _Net(23)
    y = b.op("Relu", [b.conv("x", 3, 32, k=7, s=2)])
    return b.model((2, 3, 61, 67), b.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])), (2, 3, 61, 67)


def _global_pools() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """GlobalMaxPool and GlobalAveragePool run blocked, on 40 channels (a padded tail), batch 2."""
    b = _Net(13)
    y = b.op("Relu", [b.conv("x", 8, 40, k=3, s=2)])
    return b.model((2, 8, 15, 17), b.op("Add", [b.op("GlobalMaxPool", [y]), b.op("GlobalAveragePool", [y])])), (2, 8, 15, 17)


def _strided_pointwise_entry() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """A 1x1 stride-2 convolution reading the NCHW input directly (40 channels: not whole 16-lane
    blocks), odd sizes, batch 2, then a blocked 3x3."""
    b = _Net(15)
    y = b.op("Relu", [b.conv("x", 40, 48, k=1, s=2)])
    return b.model((2, 40, 15, 13), b.conv(y, 48, 16, k=3)), (2, 40, 15, 13)


def _padded_entry() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """The NCHW input (40 channels: a padded tail) converted with the asymmetric SAME_UPPER border
    of the one 3x3/2 convolution reading it, odd sizes, batch 2."""
    b = _Net(17)
    y = b.op("Relu", [b.conv("x", 40, 32, k=3, s=2, auto_pad="SAME_UPPER")])
    return b.model((2, 40, 15, 12), b.conv(y, 32, 16, k=3)), (2, 40, 15, 12)


def _depthwise_tail_entry() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """A depthwise 3x3/2 convolution on the NCHW input whose 40 channels leave a zero-filled tail in
    the last block, then a ReLU and a 1x1 convolution; odd sizes, batch 2."""
    b = _Net(19)
    y = b.op("Relu", [b.conv("x", 40, 40, k=3, s=2, group=40)])
    return b.model((2, 40, 13, 11), b.conv(y, 40, 24, k=1)), (2, 40, 13, 11)


MODELS = {"depthwise_tail_entry": _depthwise_tail_entry, "padded_entry": _padded_entry, "strided_pointwise_entry": _strided_pointwise_entry, "global_pools": _global_pools, "prime_width": _prime_width, "winograd_chain": _winograd_chain, "polyphase_stride2": _polyphase_stride2, "stem_7x7": _stem_7x7, "residual_cnn": _residual_cnn, "mobile_block": _mobile_block, "concat_block": _concat_block,
          "dilated_same_pad": _dilated_same_pad}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_nchwc_models_match_onnxruntime(name: str, target: str) -> None:
    model, shape = MODELS[name]()
    _check(model, shape, target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("tile", [True, False])
def test_conversion_to_nchw_as_a_tiled_transpose(target: str, tile: bool) -> None:
    """The last FromNCHWc (whole blocks, 13 columns: one 13-wide tile per row, batch 2) runs as a
    tiled transpose by default (no tuning log), and gives onnxruntime's numbers with the knob on and off."""
    from portable.compiler.build import compile_graph

    b = _Net(17)
    model = b.model((2, 8, 13, 13), b.op("Relu", [b.conv("x", 8, 32, k=3)]))
    x = np.random.default_rng(2).standard_normal((2, 8, 13, 13)).astype(np.float32)
    exe = portable.compile(model, target=target, cache=False, use_tuning_logs=False)  # the template default
    conversions = [k for name, k in exe.plan.kernels.items() if name.endswith("fromnchwc")]
    assert len(conversions) == 1 and conversions[0]["knobs"]["tile_transpose"] is True
    exe = compile_graph(portable.load_onnx(model), target, lambda k, t: {"tile_transpose": tile} if k.family == "elemwise" else None)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(exe.run(x)[0], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", TARGETS)
def test_tiled_transpose_column_widths_match_onnxruntime(target: str) -> None:
    """Every ``transpose_columns`` the space offers (16 columns per row: 4, 8 and 2; 16 would make
    a 1 KiB tile on AVX-512, heap scratch) gives onnxruntime's numbers; the default is 4."""
    from portable.compiler.build import compile_graph

    b = _Net(5)
    model = b.model((1, 8, 16, 16), b.op("Relu", [b.conv("x", 8, 32, k=3)]))
    x = np.random.default_rng(3).standard_normal((1, 8, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    exe = portable.compile(model, target=target, cache=False, use_tuning_logs=False)
    [default] = [k["knobs"] for name, k in exe.plan.kernels.items() if name.endswith("fromnchwc")]
    assert default["transpose_columns"] == 4
    for columns in (4, 8, 2):
        knobs = {"tile_transpose": True, "transpose_columns": columns}
        exe = compile_graph(portable.load_onnx(model), target, lambda k, t, kn=knobs: kn if k.family == "elemwise" else None)
        [used] = [k["knobs"] for name, k in exe.plan.kernels.items() if name.endswith("fromnchwc")]
        assert used["transpose_columns"] == columns
        np.testing.assert_allclose(exe.run(x)[0], ref, rtol=1e-4, atol=1e-4)


def test_pass_keeps_whole_block_values_blocked_and_converts_once() -> None:
    """residual_cnn: no conversion between its convolutions; the global pool runs blocked too, and
    the one FromNCHWc converts its pooled output for Flatten."""
    model, _ = _residual_cnn()
    graph = copy_graph(portable.load_onnx(model))
    assert convert_to_nchwc(graph, 16) == 4
    ops = [n.op for n in graph.nodes]
    assert ops.count("FromNCHWc") == 1 and ops.count("ToNCHWc") == 0
    assert "GlobalAveragePool" not in ops and ops.count("NCHWcAveragePool") == 2
    assert ops.index("FromNCHWc") == ops.index("Flatten") - 1
    assert "NCHWcMaxPool" in ops


def test_strided_pointwise_convolution_reads_the_nchw_input() -> None:
    """A 1x1/2 convolution on an NCHW input reads it directly (no ToNCHWc); a 3x3/2 one converts."""
    for k, conversions in ((1, 0), (3, 1)):
        b = _Net(16)
        model = b.model((1, 32, 14, 14), b.op("Relu", [b.conv("x", 32, 32, k=k, s=2)]))
        graph = copy_graph(portable.load_onnx(model))
        assert convert_to_nchwc(graph, 16) == 1
        assert [n.op for n in graph.nodes].count("ToNCHWc") == conversions


def test_conversion_carries_the_border_of_its_one_convolution() -> None:
    """An NCHW input read by one padded convolution is converted with that zero border (the
    convolution then has none); read by two, it is converted once, unpadded, and shared."""
    b = _Net(18)
    model = b.model((1, 32, 14, 14), b.op("Relu", [b.conv("x", 32, 32, k=3, s=2)]))
    graph = copy_graph(portable.load_onnx(model))
    convert_to_nchwc(graph, 16)
    conversion = next(n for n in graph.nodes if n.op == "ToNCHWc")
    assert conversion.attrs["pads"] == [1, 1, 1, 1]
    assert graph.values[conversion.outputs[0]].shape == (1, 2, 16, 16, 16)
    assert next(n for n in graph.nodes if n.op == "NCHWcConv").attrs["pads"] == [0, 0, 0, 0]
    b = _Net(18)
    model = b.model((1, 32, 14, 14), b.op("Add", [b.conv("x", 32, 32, k=3, s=2), b.conv("x", 32, 32, k=3, s=2)]))
    graph = copy_graph(portable.load_onnx(model))
    convert_to_nchwc(graph, 16)
    conversions = [n for n in graph.nodes if n.op == "ToNCHWc"]
    assert len(conversions) == 1 and "pads" not in conversions[0].attrs
    assert all(n.attrs["pads"] == [1, 1, 1, 1] for n in graph.nodes if n.op == "NCHWcConv")


@pytest.mark.parametrize("target", TARGETS)
def test_winograd_takes_the_large_3x3_convolutions(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """winograd_chain's five 3x3 convolutions run as Winograd kernels; PORTABLE_WINOGRAD=0 keeps them direct."""
    model, _ = _winograd_chain()
    assert _step_families(portable.compile(model, target=target, cache=False)).count("conv2d_winograd_nchwc") == 5
    monkeypatch.setenv("PORTABLE_WINOGRAD", "0")
    assert "conv2d_winograd_nchwc" not in _step_families(portable.compile(model, target=target, cache=False))


def test_polyphase_takes_the_large_stride2_convolutions() -> None:
    """Both 3x3/2 convolutions of polyphase_stride2 split their input by phase and run as Winograd
    (the NCHW input needs no separate ToNCHWc); a 3x3/2 one with a 7 x 7 output stays direct."""
    model, _ = _polyphase_stride2()
    graph = copy_graph(portable.load_onnx(model))
    assert convert_to_nchwc(graph, 16) == 2
    ops = [n.op for n in graph.nodes]
    assert ops.count("NCHWcPhaseSplit") == 2 and ops.count("NCHWcWinogradConv") == 2 and "ToNCHWc" not in ops
    b = _Net(16)
    small = copy_graph(portable.load_onnx(b.model((1, 32, 14, 14), b.conv("x", 32, 32, k=3, s=2))))
    convert_to_nchwc(small, 16)
    assert "NCHWcPhaseSplit" not in [n.op for n in small.nodes]


@pytest.mark.parametrize("target,blocks", [("host", 1), ("x86-avx2", 2)])
def test_stem_runs_by_densely_packed_phases(target: str, blocks: int) -> None:
    """stem_7x7's first layer splits its 3-channel input into 4 phases packed into one block (two on
    AVX2) and runs as F(4x4, 4x4); with a 7x7 stride-1 or a 16-channel input it stays direct."""
    model, _ = _stem_7x7()
    exe = portable.compile(model, target=target, cache=False)
    [split] = [s for s in exe.plan.steps if s["kernel"].endswith("nchwcphasesplit")]
    assert exe.plan.values[split["args"][-1]]["shape"][1] == blocks
    assert "conv2d_winograd_nchwc" in _step_families(exe)
    for cin, s in ((3, 1), (16, 2)):
        b = _Net(24)
        graph = copy_graph(portable.load_onnx(b.model((1, cin, 64, 64), b.conv("x", cin, 32, k=7, s=s))))
        convert_to_nchwc(graph, 16)
        assert "NCHWcPhaseSplit" not in [n.op for n in graph.nodes]


def test_compile_cache_keeps_the_layout_switches_apart(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached Winograd build is not returned once PORTABLE_WINOGRAD=0 is set (nor the reverse)."""
    monkeypatch.setenv("PORTABLE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PORTABLE_NO_CACHE", raising=False)
    model, _ = _winograd_chain()

    def winograd_kernels() -> int:
        exe = portable.compile(model, target="host", cache=True)
        return _step_families(exe).count("conv2d_winograd_nchwc")

    assert winograd_kernels() > 0
    monkeypatch.setenv("PORTABLE_WINOGRAD", "0")
    assert winograd_kernels() == 0
    monkeypatch.delenv("PORTABLE_WINOGRAD")
    assert winograd_kernels() > 0


def test_winograd_weight_transform_gives_direct_convolution() -> None:
    """pack_winograd_weight + the transforms of transform_matrices reproduce a direct 3x3 correlation
    on one tile (numpy, float64), for both tile sizes."""
    rng = np.random.default_rng(0)
    for m in (2, 4):
        a_mat, b_mat, _ = transform_matrices(m)
        w = rng.standard_normal((16, 16, 3, 3))
        d = rng.standard_normal((16, m + 2, m + 2))  # [in channel, tile patch]
        u = pack_winograd_weight(w, 16, m)[:, :, 0, 0]  # [a, a, cb_in, cb_out]
        v = np.einsum("re,crs,sf->efc", b_mat, d, b_mat)
        y = np.einsum("ei,efk,fj->kij", a_mat, np.einsum("efc,efck->efk", v, u), a_mat)
        direct = np.array([[[np.sum(w[k] * d[:, i:i + 3, j:j + 3]) for j in range(m)] for i in range(m)]
                           for k in range(16)])
        np.testing.assert_allclose(y, direct, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k,cin,dense", [(3, 20, False), (7, 3, True)])
def test_polyphase_weights_give_the_strided_convolution(k: int, cin: int, dense: bool) -> None:
    """pack_polyphase_winograd_weight + F(4x4, r x r) over the four phases of a patch reproduce a
    direct k x k stride-2 correlation (numpy, float64): 3x3 on 20 input channels (phases in 2 padded
    blocks each), 7x7 on 3 channels packed densely (12 phase channels in one block)."""
    rng = np.random.default_rng(1)
    m, r = 4, (k + 1) // 2
    a = m + r - 1
    a_mat, b_mat, _ = transform_matrices(m, r)
    w = rng.standard_normal((16, cin, k, k))
    d = rng.standard_normal((cin, 2 * a, 2 * a))  # the padded input under one 4x4 output tile
    per_phase = cin if dense else 32  # channels each phase owns
    lanes = -(-4 * per_phase // 16) * 16
    phases = np.zeros((lanes, a, a))  # [phase-major channel, row, column]
    for p in range(4):
        phases[p * per_phase:p * per_phase + cin] = d[:, p // 2::2, p % 2::2][:, :a, :a]
    u = pack_polyphase_winograd_weight(w, 16, m, dense=dense)  # [a, a, O/cb, lanes/cb, cb_in, cb_out]
    u = u[:, :, 0].reshape(a, a, lanes, 16)
    v = np.einsum("re,crs,sf->efc", b_mat, phases, b_mat)
    y = np.einsum("ei,efk,fj->kij", a_mat, np.einsum("efc,efck->efk", v, u), a_mat)
    direct = np.array([[[np.sum(w[o] * d[:, 2 * i:2 * i + k, 2 * j:2 * j + k]) for j in range(m)] for i in range(m)]
                       for o in range(16)])
    np.testing.assert_allclose(y, direct, rtol=1e-9, atol=1e-9)


def test_layout_env_switch_keeps_nchw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTABLE_LAYOUT", "nchw")
    model, shape = _residual_cnn()
    exe = portable.compile(model, target="host", cache=False)
    assert not any("nchwc" in info["family"] for info in exe.plan.kernels.values())


@pytest.mark.parametrize("depthwise,blocked", [(False, True), (False, False), (True, True)])
def test_weight_packing_matches_the_blocked_index(depthwise: bool, blocked: bool) -> None:
    """pack_conv_weight puts W[o, i, y, x] where NCHWcConv reads it (numpy oracle, padded tails zero)."""
    rng = np.random.default_rng(0)
    cb = 8
    w = rng.standard_normal((20, 1 if depthwise else 12, 3, 2)).astype(np.float32)
    p = pack_conv_weight(w, cb, blocked, depthwise)
    for o, i, y, x in [(0, 0, 0, 0), (19, 0, 2, 1), (9, w.shape[1] - 1, 1, 0)]:
        if depthwise:
            assert p[o // cb, y, x, o % cb] == w[o, 0, y, x]
        elif blocked:
            assert p[o // cb, i // cb, y, x, i % cb, o % cb] == w[o, i, y, x]
        else:
            assert p[o // cb, i, y, x, o % cb] == w[o, i, y, x]
    assert p.size >= w.size and np.count_nonzero(p) == np.count_nonzero(w)


def test_avx2_target_uses_8_channel_blocks() -> None:
    model, _ = _residual_cnn()
    exe = portable.compile(model, target="x86-avx2", cache=False)
    shapes = [exe.plan.values[s["args"][-1]]["shape"] for s in exe.plan.steps
              if exe.plan.kernels[s["kernel"]]["family"] == "conv2d_nchwc"]
    assert shapes and all(s[-1] == 8 for s in shapes)
    assert resolve_target("x86-avx2").vector_lanes_f32 == 8


@pytest.mark.parametrize("op,attrs", [("ToNCHWc", {"block": 16, "pads": [1, 0, 1, 0]}),
                                      ("NCHWcPhaseSplit", {"block": 16, "pads": [1, 1], "size": [4, 4]})])
def test_padded_reads_keep_their_clamps(op: str, attrs: dict) -> None:
    """The conversions read a 40-channel input (a padded block) with a zero border: every read of the
    input keeps its clamped indices after TVM's simplification. (It once dropped them under the
    Select's condition, and the vector loads read up to 8 channel planes past the array's end.)"""
    import re

    from tvm import te

    from portable.ops.registry import Attrs, lookup

    x = te.placeholder((1, 40, 6, 7), "float32", name="x")
    out = lookup(op).compute([x], Attrs(attrs, 17, op))[0]
    body = [line for line in te.create_prim_func([x, out]).script().splitlines()
            if line.strip().startswith(f"{out.op.name}[")]
    loads = [idx for line in body for idx in re.findall(r"\bx\[(.*?)\], T\.float32", line)]
    assert loads, body
    for index in loads:  # the channel clamped above, the row on both sides
        assert index.count("T.min(") >= 2 and index.count("T.max(") >= 1, index
