"""Layout pass: run convolution chains in the channel-blocked NCHWc layout (inference, CPU targets).

Why a graph pass and not a per-kernel layout choice: an NCHW convolution vectorises over output
channels only if it transposes its input on every call, and a strided or depthwise NCHW
convolution needs gathers. In ``[N, C/cb, H, W, cb]`` (cb = SIMD lanes) every operator of a CNN's
body (convolution, pooling, bias, activations, residual adds, channel concat) reads and writes
whole channel vectors, so the layout is converted once at the region's borders instead of
per kernel. onnxruntime's MLAS does the same (NCHWc between its convolutions).

Rules:
- Seeds: 2-D ``Conv`` with constant float32 weights, groups 1 or depthwise (multiplier 1), and at
  least one full block of output channels. One whose input is still NCHW reads it converted, except
  few-channel inputs and strided 1x1 convolutions, which read the NCHW input directly (a depthwise
  one converts any channel count: the zero-filled tail lanes meet zero weights). Its weights
  are packed here, once. 3x3 stride-1 ones with a blocked input and an output of at least 7 x 7 become
  ``NCHWcWinogradConv`` (weights packed already transformed); 3x3 stride-2 ones with an output of
  at least 28 x 28 become ``NCHWcPhaseSplit`` (their input, NCHW or blocked, split into its four
  phases in one pass) + ``NCHWcWinogradConv`` F(4x4, 2x2) over the phases; a 7x7 stride-2 one on a
  few-channel NCHW input (a first layer) the same with F(4x4, 4x4), its phases packed densely (12
  channels of one block for RGB). ``PORTABLE_WINOGRAD=0`` keeps all of them direct.
- Propagation: elementwise ops whose other operands are blocked values of the same shape, scalars,
  or per-channel constants (packed to ``[1, C/cb, 1, 1, cb]``); MaxPool/AveragePool (2-D) and
  their global forms; Concat
  on the channel axis when every part fills whole blocks.
- A zero-padded channel tail is only carried through ops that keep its lanes finite (the next
  convolution multiplies them by zero weights); anything else gets the NCHW form, made by one
  ``FromNCHWc`` the first time a consumer needs it. Graph outputs are always NCHW.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..graph import Graph, Node, TensorInfo
from ..ops.blocked import pack_channel_vector, pack_conv_weight
from ..ops.conv import conv_pads
from ..ops.infer import infer_node
from ..ops.registry import Attrs
from ..ops.winograd import pack_polyphase_winograd_weight, pack_winograd_weight

#: elementwise ops whose result does not depend on the element's position (layout free), and
#: which keep finite values finite, so they may also run on a zero-padded channel tail
FINITE_ELEMWISE = {"Relu", "Clip", "LeakyRelu", "Add", "Sub", "Mul", "Sigmoid", "HardSigmoid", "HardSwish",
                   "Tanh", "Max", "Min", "Sum", "Identity", "PRelu", "Abs", "Neg", "Elu", "Selu", "Softsign",
                   "Erf", "Mean"}
#: layout-free elementwise ops that may produce inf/NaN from a padded lane (whole blocks only)
OTHER_ELEMWISE = {"Div", "Exp", "Log", "Sqrt", "Reciprocal", "Softplus", "Pow", "Mish", "Gelu"}


#: Winograd for 3x3 stride-1 convolutions on blocked inputs whose output is at least 7 x 7.
#: Measured per kernel on Ice Lake (2 threads), direct -> Winograd: 64 ch 56x56 0.87 -> 0.50 ms,
#: 128 ch 28x28 0.84 -> 0.38 ms, 256 ch 14x14 0.86 -> 0.55 ms, 512 ch 7x7 1.19 -> 1.13 ms (m = 2;
#: m = 4 1.76 ms: at 7x7 its tiles cover 2x2 of 4x4 with 30% waste and its transformed weights,
#: 36/9 = 4x the direct ones, 38 MB at 512 channels, stream from memory). Inside ResNet-18, with
#: cold weights, F(2x2) is the better one below 28 x 28 (layer3: 0.79 vs 0.84 ms; its weights are
#: 16/9 of the direct ones, not 36/9), F(4x4) above (layer1: 0.55 vs 0.92 ms). On Zen 4, whose
#: 512-bit FMAs issue one per cycle, the direct kernels already run at the FMA peak, so fewer
#: multiplications pay wherever the transforms do: 512 ch 7x7 as a one-layer model (NCHW in and out)
#: 1.04 -> 0.70 ms, and ResNet-18 0.933x with F(2x2) at 7x7 than without (95% interval [0.92,
#: 0.99], 15 alternating rounds in one process). Other models, floor 7 against 14 on Zen 4 (whole
#: models, 12 rounds): SqueezeNet 0.79x, Inception v1 0.82x, ZFNet 0.86x, Inception v2 0.96x, AlexNet
#: 1.00x, ResNet-50 1.01x, DenseNet-121 1.014x [1.004, 1.039] (its 7x7 convolutions make 32 channels:
#: two oc blocks per product, where the transforms weigh most). The floor was 14 before: Ice Lake's 5%
#: at 7x7 did not seem worth the larger weights.
WINOGRAD_MIN_SIDE = 7


#: 3x3 stride-2 convolutions whose output is at least this large run as F(4x4, 2x2) over the
#: input's four phases (``portable/ops/winograd.py``): 0.69x the multiplications of the direct kernel,
#: for whole 4x4 tiles. Measured on Zen 4 (2 threads, one-layer models with NCHW in and out, 10-15
#: alternating rounds in one process, against the direct kernel): 64 -> 128 ch at 56x56 (ResNet-18
#: layer2) 0.78x (0.42 ms Winograd against 0.51 direct; onnxruntime 1.0x the direct model), ResNet-18
#: whole 0.986x; but 128 -> 256 ch at 28x28 (14x14 out: 16x16 of tiles, 31% waste) 1.12x and 256 ->
#: 512 ch at 14x14 (7x7 out) 2.4x.
POLYPHASE_MIN_SIDE = 28
POLYPHASE_TILE = 4
#: Stride-2 first layers with a large kernel on a few-channel NCHW input (ResNet's and GoogLeNet's 7x7
#: on RGB) run by phases too: each phase sees a 4x4 kernel, and F(4x4, 4x4) does 49 multiply-adds
#: per 16 outputs and (padded) phase channel. The four phases of 3 channels share one 16-lane block
#: (``dense``), so that is 49 / 16 x 16 = 49 per output against 147 direct: a third. The products
#: reduce over one block only, so each output task computes its own products (``products_per_row``
#: in ``schedules/x86/winograd.py``) instead of writing the layer's 9.8 MB of them to memory first.
#: Measured on Zen 4 (2 threads, ResNet's 7x7/2 3 -> 64 at 224 as a one-layer model, alternating
#: rounds in one process, against the direct kernel with its tuned record): whole-layer products
#: F(4x4, 4x4) 0.81-0.84x for four untuned product tiles, F(3x3, 4x4) 1.02-1.36x, F(2x2, 4x4)
#: 1.5-1.9x; F(4x4, 4x4) tuned 0.82x [0.74, 0.85] (onnxruntime 1.28x), and with products per row
#: 0.72-0.75x that. Whole models against the direct stem (15 rounds, products per row): ResNet-18
#: 0.949x [0.87, 1.02], ResNet-50 0.976x [0.957, 0.993], Inception v1 0.983x [0.958, 1.000],
#: DenseNet-121 0.963x [0.92, 1.08], Inception v2 1.019x [0.95, 1.04]; with whole-layer products
#: Inception v1 had been 1.08x [0.96, 1.20]: its 9.8 MB of products went to memory.
#: fp32 error: 3.1e-5 max abs on outputs up to 7 (direct: 3.3e-6).
STEM_KERNELS = (7,)
STEM_TILE = 4


def winograd_tile(out_side: int) -> int:
    """Output tile m of F(m x m, 3 x 3) for an output whose smaller side is ``out_side``."""
    return 4 if out_side >= 28 else 2


class _Rewriter:
    """State of one pass over the graph: which values exist in blocked form and under what name."""

    def __init__(self, graph: Graph, block: int, winograd: bool = True):
        self.g = graph
        self.block = block
        self.winograd = winograd
        self.nodes: list[Node] = []
        self.blocked: dict[str, str] = {}  # NCHW value -> its blocked twin
        self.channels: dict[str, int] = {}  # blocked value -> real channel count
        self.plain_ready: set[str] = set(graph.inputs) | set(graph.constants)
        #: value -> number of reads (node inputs and graph outputs)
        self.uses: dict[str, int] = {v: len(ns) for v, ns in graph.consumers().items()}
        for out in graph.outputs:
            self.uses[out] = self.uses.get(out, 0) + 1
        self.counter = 0

    # --------------------------------------------------------------------------------- helpers
    def fresh(self, base: str) -> str:
        """A new value name derived from ``base``."""
        self.counter += 1
        return f"{base}::nchwc{self.counter}"

    def const(self, base: str, arr: np.ndarray) -> str:
        """Add a compile-time constant."""
        name = self.fresh(base)
        self.g.constants[name] = arr
        self.g.values[name] = TensorInfo(tuple(arr.shape), str(arr.dtype))
        return name

    def emit(self, node: Node) -> None:
        """Append ``node`` and record its output types."""
        infer_node(node, self.g.values, self.g.constants)
        self.nodes.append(node)

    def padded(self, value: str) -> bool:
        """True if blocked ``value`` carries a zero-padded channel tail."""
        return self.channels[value] % self.block != 0

    def as_plain(self, value: str) -> str:
        """The NCHW name of ``value``, converting it from its blocked twin on first use."""
        if value in self.plain_ready or value not in self.blocked:
            return value
        self.nodes.append(Node("FromNCHWc", f"{value}::from_nchwc", [self.blocked[value]], [value],
                               {"channels": self.channels[self.blocked[value]]}))
        self.plain_ready.add(value)
        return value

    def as_blocked(self, value: str) -> str:
        """The blocked name of 4-D float ``value``, converting it from NCHW on first use."""
        if value not in self.blocked:
            self.blocked[value] = self.convert(value)
        return self.blocked[value]

    def padded_blocked(self, value: str, pads: list[int]) -> str:
        """A blocked copy of NCHW ``value`` with a zero border ``pads`` (top, left, bottom, right),
        for one consumer: not recorded as ``value``'s blocked twin (its shape differs)."""
        return self.convert(value, {"pads": pads})

    def phase_split(self, value: str, top_left: list[int], out_hw: list[int], taps: int, dense: bool) -> str:
        """The four phases of ``value`` (its blocked twin if it has one, else the NCHW value itself)
        for a stride-2 convolution with padding ``top_left``, output ``out_hw`` and ``taps`` per
        phase and axis: each phase ``taps - 1`` rows and columns larger than the output
        (``NCHWcPhaseSplit``; ``dense``: a few-channel NCHW input's phases share blocks)."""
        out = self.fresh(value)
        self.emit(Node("NCHWcPhaseSplit", f"{value}::phase_split", [self.blocked.get(value, value)], [out],
                       {"block": self.block, "pads": top_left, "size": [out_hw[0] + taps - 1, out_hw[1] + taps - 1],
                        "dense": int(dense)}))
        return out

    def convert(self, value: str, extra: dict[str, Any] | None = None) -> str:
        """Emit a ``ToNCHWc`` of NCHW ``value`` (``extra`` attributes besides the block) and return
        the new blocked value."""
        out = self.fresh(value)
        self.emit(Node("ToNCHWc", f"{value}::to_nchwc", [value], [out], {"block": self.block, **(extra or {})}))
        self.channels[out] = self.g.values[value].shape[1]
        return out

    def produce(self, node: Node, blocked_out: str, channels: int) -> None:
        """Record that ``node`` (already emitted) produced the blocked twin of its first output."""
        self.blocked[node.outputs[0]] = blocked_out
        self.channels[blocked_out] = channels

    # ----------------------------------------------------------------------------------- rules
    def conv(self, node: Node) -> bool:
        """Rewrite a qualifying Conv to NCHWcConv."""
        g, x = self.g, node.inputs[0]
        w_name = node.inputs[1]
        b_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
        info = g.values.get(x)
        if info is None or len(info.shape) != 4 or info.dtype != "float32" or w_name not in g.constants:
            return False
        if b_name and b_name not in g.constants:
            return False
        w = g.constants[w_name]
        oc, icg, kh, kw = w.shape
        groups = int(node.attrs.get("group", 1))
        c = info.shape[1]
        depthwise = groups > 1 and groups == c == oc and icg == 1
        if (groups != 1 and not depthwise) or oc < self.block:
            return False
        attrs = Attrs(node.attrs, node.opset, node.describe())
        dil = [int(d) for d in node.attrs.get("dilations", [1, 1])]
        strides = [int(s) for s in node.attrs.get("strides", [1, 1])]
        pads = conv_pads(attrs, info.shape[2:], [kh, kw], strides, dil)
        onnx_pads = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
        out_hw = [(info.shape[2 + i] + sum(pads[i]) - dil[i] * (kk - 1) - 1) // strides[i] + 1
                  for i, kk in enumerate((kh, kw))]
        # an NCHW input with at least a block of channels is converted (0.04-0.06 ms for 64 x 56 x 56):
        # the NCHW-input kernel is for few-channel first layers and for strided pointwise
        # convolutions, which read 1/(sh*sw) of the pixels a conversion would move (128 -> 256 1x1/2
        # at 28x28: 0.070 ms vs conversion 0.025 + 0.091, 2 threads). 64 -> 128 3x3/2 at 56x56 (2
        # threads, whole one-layer model, two 30-round runs in one process each): converted 0.666 and
        # 0.698 ms; NCHW input with the padding inlined 0.646 and 0.673 (tuned; bounds branches and
        # two spilled accumulators eat most of the saved conversion: within the run-to-run spread);
        # with the padding materialised 0.85-1.1 ms (channel loop outside the window: LLVM shares
        # broadcasts between the unrolled kx steps, as stride 2 makes column 2j+2 both (j, kx=2) and
        # (j+1, kx=0), and spills up to 8 accumulators; channel loop inside: every step reads another
        # 13 KiB channel plane, a new 4 KiB page). Splitting the borders off (TVM's LoopPartition:
        # ``pragma_loop_partition_hint`` on the row and column-tile loops, ``s_tir.LoopPartition``
        # with ``partition_const_loop``) leaves the interior without bounds checks, but LLVM then
        # unrolls kx and shares the broadcasts again: kernel 1.02-1.26 ms; with 16 input channels
        # innermost as well 0.62 ms against the blocked kernel's 0.54 + 0.09 of conversions: the
        # whole model within 3% of converting (one process, 400 alternating runs each)
        strided_pointwise = (kh, kw) == (1, 1) and max(strides) > 1
        blocked_in = depthwise or x in self.blocked or (c >= self.block and not strided_pointwise)
        winograd_able = self.winograd and blocked_in and not depthwise and (kh, kw) == (3, 3) and dil == [1, 1]
        use_winograd = winograd_able and strides == [1, 1] and min(out_hw) >= WINOGRAD_MIN_SIDE
        use_phases = winograd_able and strides == [2, 2] and min(out_hw) >= POLYPHASE_MIN_SIDE
        # a large-kernel stride-2 first layer (ResNet's 7x7 on 3 channels) by phases: the four phases
        # of its few channels share one block, so the products reduce over 16 lanes, not 4 blocks
        # (an unblocked input of a k x k convolution here is an NCHW one with fewer channels than a
        # block, groups 1)
        use_stem = (self.winograd and not blocked_in and kh == kw and kh in STEM_KERNELS
                    and strides == [2, 2] and dil == [1, 1] and min(out_hw) >= POLYPHASE_MIN_SIDE)
        direct_pads = onnx_pads
        if use_phases or use_stem:
            xin = self.phase_split(x, [pads[0][0], pads[1][0]], out_hw, (kh + 1) // 2, dense=use_stem)
        elif blocked_in and not use_winograd and x not in self.blocked and any(onnx_pads) \
                and self.uses.get(x) == 1:
            # converted for this convolution alone: the conversion writes the zero border too, so
            # the convolution does not copy its input once more into a padded buffer
            xin, direct_pads = self.padded_blocked(x, onnx_pads), [0, 0, 0, 0]
        else:
            xin = self.as_blocked(x) if blocked_in else x
        if use_phases or use_stem:
            tile = STEM_TILE if use_stem else POLYPHASE_TILE
            packed = pack_polyphase_winograd_weight(w, self.block, tile, dense=use_stem)
            op, op_attrs = "NCHWcWinogradConv", {"tile": tile, "pads": [0, 0, 0, 0]}
        elif use_winograd:
            tile = winograd_tile(min(out_hw))
            packed = pack_winograd_weight(w, self.block, tile)
            op, op_attrs = "NCHWcWinogradConv", {"tile": tile, "pads": onnx_pads}
        else:
            packed = pack_conv_weight(w, self.block, blocked_in and not depthwise, depthwise)
            op, op_attrs = "NCHWcConv", {"strides": strides, "dilations": dil, "depthwise": int(depthwise),
                                         "pads": direct_pads}
        ins = [xin, self.const(w_name, packed)]
        if b_name:
            ins.append(self.const(b_name, pack_channel_vector(g.constants[b_name], self.block)))
        out = self.fresh(node.outputs[0])
        self.emit(Node(op, node.name, ins, [out], op_attrs, node.opset))
        self.produce(node, out, oc)
        return True

    def elementwise(self, node: Node) -> bool:
        """Run a layout-free elementwise op on blocked operands."""
        if node.op not in FINITE_ELEMWISE | OTHER_ELEMWISE or len(node.outputs) != 1:
            return False
        blocked = [i for i in node.inputs if i in self.blocked]
        if not blocked:
            return False
        shape = self.g.values[blocked[0]].shape  # every blocked operand must have this NCHW shape
        if self.g.values[node.outputs[0]].shape != shape:
            return False
        channels = self.channels[self.blocked[blocked[0]]]
        if channels % self.block and node.op not in FINITE_ELEMWISE:
            return False
        new_inputs: list[str] = []
        for name in node.inputs:
            new_inputs.append(self._operand(name, shape))
            if new_inputs[-1] is None:
                return False
        out = self.fresh(node.outputs[0])
        self.emit(Node(node.op, node.name, new_inputs, [out], dict(node.attrs), node.opset, node.domain))
        self.produce(node, out, channels)
        return True

    def _operand(self, name: str, shape: tuple[int, ...]) -> Any:
        """Blocked form of one elementwise operand, or None if it cannot take one."""
        if not name:
            return name
        if name in self.blocked:
            return self.blocked[name] if self.g.values[name].shape == shape else None
        info = self.g.values[name]
        if name in self.g.constants:
            arr = self.g.constants[name]
            if arr.size == 1:
                return name
            per_channel = arr.ndim <= 4 and arr.ndim >= 3 and arr.shape[-2:] == (1, 1) and \
                arr.shape[-3] == shape[1] and all(d == 1 for d in arr.shape[:-3])
            if not per_channel:
                return None
            packed = pack_channel_vector(arr.reshape(-1), self.block, fill=1.0)
            return self.const(name, packed.reshape(1, packed.shape[0], 1, 1, self.block))
        if info.shape == shape and info.dtype == "float32" and shape[1] % self.block == 0:
            return self.as_blocked(name)
        return None

    def pool(self, node: Node) -> bool:
        """MaxPool (no Indices) / AveragePool on a blocked 2-D input; the global pools as the same
        pools with a whole-plane window (so a classifier head pools before leaving the layout, and
        converts C values per image instead of C x H x W)."""
        if node.op not in ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"):
            return False
        if node.inputs[0] not in self.blocked:
            return False
        if len([o for o in node.outputs if o]) != 1 or len(self.g.values[node.inputs[0]].shape) != 4:
            return False
        if node.op in ("MaxPool", "GlobalMaxPool") and node.opset < 8:
            return False
        src = self.blocked[node.inputs[0]]
        out = self.fresh(node.outputs[0])
        op, attrs = node.op, dict(node.attrs)
        if op.startswith("Global"):
            op, attrs = op[len("Global"):], {"kernel_shape": list(self.g.values[node.inputs[0]].shape[2:])}
        self.emit(Node(f"NCHWc{op}", node.name, [src], [out], attrs, node.opset))
        self.produce(node, out, self.channels[src])
        return True

    def concat(self, node: Node) -> bool:
        """Concat of whole channel blocks along the channel axis."""
        if node.op != "Concat" or len(self.g.values[node.outputs[0]].shape) != 4:
            return False
        if int(node.attrs.get("axis", 0)) not in (1, -3):
            return False
        if not all(i in self.blocked and not self.padded(self.blocked[i]) for i in node.inputs):
            return False
        out = self.fresh(node.outputs[0])
        self.emit(Node("Concat", node.name, [self.blocked[i] for i in node.inputs], [out], {"axis": 1},
                       node.opset))
        self.produce(node, out, sum(self.channels[self.blocked[i]] for i in node.inputs))
        return True

    def run(self) -> int:
        """Rewrite every node; returns the number of convolutions moved to NCHWc."""
        convs = 0
        for node in self.g.nodes:
            if node.op == "Conv" and self.conv(node):
                convs += 1
                continue
            if self.elementwise(node) or self.pool(node) or self.concat(node):
                continue
            node.inputs = [self.as_plain(i) if i else i for i in node.inputs]
            self.nodes.append(node)
            self.plain_ready.update(o for o in node.outputs if o)
        for out in self.g.outputs:
            self.as_plain(out)
        self.g.nodes = self.nodes
        return convs


def convert_to_nchwc(graph: Graph, block: int, winograd: bool = True) -> int:
    """Move the graph's convolution chains to the ``block``-channel NCHWc layout, in place
    (qualifying 3x3 convolutions as Winograd ones unless ``winograd`` is False).

    Returns the number of convolutions converted (0: the graph is unchanged).
    """
    if not any(n.op == "Conv" for n in graph.nodes):
        return 0
    snapshot = list(graph.nodes)
    rewriter = _Rewriter(graph, block, winograd)
    converted = rewriter.run()
    if not converted:
        graph.nodes = snapshot
    return converted
