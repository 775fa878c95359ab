"""Training: gradients and optimizer steps compiled as one graph of registered operators.

The training graph is the forward graph (imported with parameters kept as values), a loss, the
backward pass (:mod:`portable.autodiff`) and one fused optimizer update per parameter, compiled
once by the ordinary compiler. Parameters, optimizer state and BatchNorm running statistics are
runtime inputs whose updated values are outputs; after each step the Executable swaps the
input and output device buffers, so nothing goes through numpy between steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .autodiff import GradBuilder, backward, get_adjoint
from .autodiff.grad import _feeds
from .errors import InputError, ModelError
from .graph import Graph, Node, TensorInfo
from .ops.registry import REGISTRY
from .optim import SGD, Optimizer, StateSlot

BUILTIN_LOSSES = ("cross_entropy", "nll", "mse", "l1")
TARGET, STEP = "__target__", "__step__"


# ---------------------------------------------------------------------- graph construction


def source_proto(model: Any) -> onnx.ModelProto:
    """The ONNX model behind ``model`` (a Graph from portable.load_onnx, a path, bytes or a ModelProto)."""
    from .frontend.onnx_import import _load_proto

    if isinstance(model, Graph):
        proto = getattr(model, "source_proto", None)
        if proto is None:
            raise ModelError("this Graph was not imported from ONNX, so it cannot be trained; pass the ONNX model")
        return proto
    return _load_proto(model)


def import_for_training(proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None) -> Graph:
    """Import ``proto`` keeping float initializers as (unfolded) values and Dropout as nodes."""
    from .frontend import load_onnx

    return load_onnx(proto, shapes, keep_params=True)


def params_to_inputs(graph: Graph, names: Sequence[str]) -> None:
    """Turn constants ``names`` into graph inputs (appended in order)."""
    for n in names:
        if n not in graph.constants:
            raise ModelError(f"{n!r} is not an initializer of the model")
        del graph.constants[n]
        if n not in graph.inputs:
            graph.inputs.append(n)


def trainable_params(graph: Graph, loss: str) -> list[str]:
    """Float initializers through which a gradient reaches ``loss`` (model order)."""
    feeds = _feeds(graph, {loss})
    found: dict[str, None] = {}
    for node in graph.nodes:
        if not any(o in feeds for o in node.outputs):
            continue
        op, adj = REGISTRY[node.op], get_adjoint(node.op)
        for i, name in enumerate(node.inputs):
            if (name in graph.params and name in graph.constants and graph.constants[name].dtype.kind == "f"
                    and i not in op.const_inputs and adj is not None and i not in adj.nondiff_inputs):
                found.setdefault(name, None)
    return list(found)


def _splice(graph: Graph, node: Node, build: Any) -> None:
    """Replace ``node`` by the nodes ``build(builder)`` emits, keeping topological order."""
    idx = graph.nodes.index(node)
    rest = graph.nodes[idx + 1:]
    graph.nodes = graph.nodes[:idx]
    build(GradBuilder(graph, prefix=f"train/{node.name}"))
    graph.nodes.extend(rest)


@dataclass
class RunningStat:
    """A BatchNorm running statistic: its graph input, updated output and initializer name."""

    input: str
    output: str


def lower_batchnorm_training(graph: Graph, node: Node) -> list[RunningStat]:
    """BatchNormalization with batch statistics, as elementwise ops + SumTo (differentiable).

    The running mean/variance are updated as ONNX specifies (momentum, biased batch variance).
    """
    x, scale, bias, mean, var = node.inputs[:5]
    eps, mom = float(node.attrs.get("epsilon", 1e-5)), float(node.attrs.get("momentum", 0.9))
    stats: list[RunningStat] = []

    def build(b: GradBuilder) -> None:
        sx = b.shape(x)
        red = (sx[1],) + (1,) * (len(sx) - 2)
        inv_m = 1.0 / (int(np.prod(sx)) // sx[1])
        mu = b.scale(b.sum_to(x, red), inv_m)
        xc = b.op("Sub", x, mu)
        bvar = b.scale(b.sum_to(b.mul(xc, xc), red), inv_m)
        inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", bvar, b.scalar(eps, x))))
        normed = b.mul(b.mul(xc, inv), b.reshape(scale, red))
        b.emit("Add", [normed, b.reshape(bias, red)], out_names=[node.outputs[0]])
        for stat, batch, pos in ((mean, mu, 1), (var, bvar, 2)):
            if stat not in graph.params:
                continue
            out = node.outputs[pos] if len(node.outputs) > pos and node.outputs[pos] else b.fresh("running")
            upd = b.scale(b.reshape(batch, (sx[1],)), 1.0 - mom)
            b.emit("Add", [b.scale(stat, mom), upd], out_names=[out])
            stats.append(RunningStat(stat, out))

    _splice(graph, node, build)
    return stats


def lower_dropout_training(graph: Graph, node: Node) -> None:
    """Dropout -> TrainingDropout (seeded counter-based mask that changes every step)."""
    ratio = node.attrs.get("ratio", 0.5)
    if len(node.inputs) > 1 and node.inputs[1]:
        ratio = float(graph.constants[node.inputs[1]].reshape(()))
    if len(node.inputs) > 2 and node.inputs[2] and not bool(graph.constants[node.inputs[2]].reshape(())):
        ratio = 0.0

    def build(b: GradBuilder) -> None:
        outs = [node.outputs[0], node.outputs[1] if len(node.outputs) > 1 and node.outputs[1] else b.fresh("mask")]
        b.emit("TrainingDropout", [node.inputs[0], STEP], {"ratio": ratio, "seed": int(node.attrs.get("seed", 0))},
               out_names=outs)

    if STEP not in graph.values:
        graph.values[STEP] = TensorInfo((), "int32")
        graph.inputs.append(STEP)
    _splice(graph, node, build)


def add_loss(graph: Graph, b: GradBuilder, loss: str, pred: str) -> tuple[str, str | None]:
    """Append the loss; returns (scalar loss value, target input name or None)."""
    if loss not in BUILTIN_LOSSES:
        if loss not in graph.values:
            raise ModelError(f"loss {loss!r} is neither a built-in loss {BUILTIN_LOSSES} nor a value of the model")
        return loss, None
    info = graph.values[pred]
    if loss in ("cross_entropy", "nll"):
        if len(info.shape) < 2:
            raise ModelError(f"loss {loss!r} needs (N, C, ...) scores, but output {pred!r} has shape {info.shape}")
        graph.values[TARGET] = TensorInfo(info.shape[:1] + info.shape[2:], "int64")
        op = "SoftmaxCrossEntropyLoss" if loss == "cross_entropy" else "NegativeLogLikelihoodLoss"
        out = b.op(op, pred, TARGET, reduction="mean")
    else:
        graph.values[TARGET] = TensorInfo(info.shape, info.dtype)
        diff = b.op("Sub", pred, TARGET)
        per = b.mul(diff, diff) if loss == "mse" else b.op("Abs", diff)
        out = b.scale(b.sum_to(per, ()), 1.0 / max(1, info.size))
    graph.inputs.append(TARGET)
    return out, TARGET


@dataclass
class TrainingGraph:
    """A compiled-ready training graph and how to feed it."""

    graph: Graph
    model_inputs: list[str]
    target: str | None
    loss: str
    params: list[str]
    #: (input, output) pairs swapped after every step: params, optimizer state, running stats
    swaps: list[tuple[str, str]] = field(default_factory=list)
    state_init: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: list[str] = field(default_factory=list)
    uses_step: bool = False


def build_training_graph(proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None, loss: str,
                         optimizer: Optimizer, output: str | None = None) -> TrainingGraph:
    """Forward + loss + backward + optimizer updates of ``proto`` as one Graph."""
    graph = import_for_training(proto, shapes)
    model_inputs = list(graph.inputs)
    pred = output or graph.outputs[0]
    if pred not in graph.values:
        raise ModelError(f"output {pred!r} is not a value of the model")
    running: list[RunningStat] = []
    for node in list(graph.nodes):
        if node.op == "BatchNormalization":
            running += lower_batchnorm_training(graph, node)
        elif node.op == "Dropout":
            lower_dropout_training(graph, node)
    b = GradBuilder(graph)
    loss_value, target = add_loss(graph, b, loss, pred)
    params = trainable_params(graph, loss_value)
    if not params:
        raise ModelError(f"no trainable parameter (float initializer) influences the loss {loss_value!r}")
    params_to_inputs(graph, params + [r.input for r in running if r.input not in params])
    seed = b.const(np.ones(b.shape(loss_value), dtype=b.dtype(loss_value)), hint="seed")
    grads = backward(graph, [loss_value], [seed], params, b)
    tg = TrainingGraph(graph, model_inputs, target, loss_value, params, uses_step=STEP in graph.inputs)
    for name in optimizer.scalar_inputs():
        graph.values[name] = TensorInfo((), "float32")
        graph.inputs.append(name)
        tg.scalars.append(name)
    slots: list[StateSlot] = []
    for p in params:
        new_p, state = optimizer.emit(b, p, grads[p])
        tg.swaps.append((p, new_p))
        slots += state
    for s in slots:
        graph.inputs.append(s.input)
        tg.swaps.append((s.input, s.output))
        tg.state_init[s.input] = s.init
    tg.swaps += [(r.input, r.output) for r in running]
    graph.outputs = [loss_value] + [o for _, o in tg.swaps]
    graph.output_names = list(graph.outputs)  # type: ignore[attr-defined]
    return tg


# ---------------------------------------------------------------------- public API


def _bind(names: Sequence[str], inputs: Any, what: str) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        unknown = [k for k in inputs if k not in names]
        if unknown:
            raise InputError(f"unknown {what} {unknown}; expected {list(names)}")
        return {k: np.asarray(v) for k, v in inputs.items()}
    arrs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if len(arrs) != len(names):
        raise InputError(f"expected {len(names)} {what} {list(names)}, got {len(arrs)}")
    return {n: np.asarray(a) for n, a in zip(names, arrs)}


def grad(model: Any, inputs: Any, wrt: Sequence[str], output: str | None = None,
         target: str = "host") -> dict[str, np.ndarray]:
    """Gradients of the sum of a model output w.r.t. parameters and/or inputs.

    ``model`` is a Graph from portable.load_onnx, a path, bytes or ModelProto; ``inputs`` the
    model inputs (positional list or dict); ``wrt`` initializer or input names. Returns name -> array.
    """
    from .compiler.build import compile_graph

    proto = source_proto(model)
    probe = import_for_training(proto, None)
    feeds = _bind(probe.inputs, inputs, "inputs")
    graph = import_for_training(proto, {k: v.shape for k, v in feeds.items()})
    out = output or graph.outputs[0]
    if out not in graph.values:
        raise ModelError(f"output {out!r} is not a value of the model")
    values = {}
    for w in wrt:
        if w in graph.constants:
            values[w] = graph.constants[w]
        elif w not in graph.inputs:
            raise ModelError(f"cannot differentiate w.r.t. {w!r}: not an initializer or input of the model")
    params_to_inputs(graph, list(values))
    b = GradBuilder(graph)
    seed = b.const(np.ones(b.shape(out), dtype=b.dtype(out)), hint="seed")
    grads = backward(graph, [out], [seed], list(wrt), b)
    graph.outputs = [grads[w] for w in wrt]
    graph.output_names = list(graph.outputs)  # type: ignore[attr-defined]
    exe = compile_graph(graph, target)
    results = exe.run(**{**feeds, **values})
    return dict(zip(wrt, results))


class Trainer:
    """Compiled training of an ONNX model: ``step(x, y)`` runs forward, backward and the update.

    ``loss`` is a built-in ("cross_entropy", "nll", "mse", "l1") applied to the model's first
    output (or ``output``) and a target passed to ``step``, or the name of a scalar value the model
    computes itself (then ``step`` takes just the model inputs). One executable is compiled per
    distinct input shape (e.g. a smaller last batch).
    """

    def __init__(self, model: Any, loss: str = "cross_entropy", optimizer: Optimizer | None = None,
                 target: str = "host", output: str | None = None):
        self.proto = source_proto(model)
        self.loss = loss
        self.optimizer = optimizer or SGD(lr=0.01)
        self.target = target
        self.output = output
        self.step_count = 0
        self._exes: dict[tuple, tuple[Any, TrainingGraph]] = {}
        self._current: tuple[Any, TrainingGraph] | None = None
        self._state: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.proto.graph.initializer}
        self._model_inputs = import_for_training(self.proto, None).inputs

    # ---------------------------------------------------------------- compile / state
    def _executable(self, feeds: dict[str, np.ndarray]) -> tuple[Any, TrainingGraph]:
        from .compiler.build import compile_graph

        key = tuple((k, v.shape, str(v.dtype)) for k, v in sorted(feeds.items()))
        if key not in self._exes:
            shapes = {k: v.shape for k, v in feeds.items() if k in self._model_inputs}
            tg = build_training_graph(self.proto, shapes, self.loss, self.optimizer, self.output)
            exe = compile_graph(tg.graph, self.target)
            self._exes[key] = (exe, tg)
        entry = self._exes[key]
        if self._current is not entry:
            self._sync()
            exe, tg = entry
            init = {n: self._state.get(n, tg.state_init.get(n)) for n, _ in tg.swaps}
            for n, v in init.items():
                exe.write(n, v)
            self._current = entry
        return entry

    def _sync(self) -> None:
        """Copy the live device state (params, optimizer state, running stats) into ``_state``."""
        if self._current is None:
            return
        exe, tg = self._current
        for name, _ in tg.swaps:
            self._state[name] = exe.read(name)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Current values of every initializer (trained parameters included)."""
        self._sync()
        return {i.name: self._state[i.name] for i in self.proto.graph.initializer}

    # ---------------------------------------------------------------- training
    def step(self, *inputs: Any) -> float:
        """One optimizer step on a batch: ``step(x..., y)`` (no ``y`` for a model-computed loss)."""
        names = list(self._model_inputs) + ([TARGET] if self.loss in BUILTIN_LOSSES else [])
        feeds = _bind(names, list(inputs), "step arguments (model inputs, then target)")
        if TARGET in feeds and self.loss in ("cross_entropy", "nll"):
            feeds[TARGET] = feeds[TARGET].astype(np.int64)
        exe, tg = self._executable(feeds)
        if TARGET in feeds:
            feeds[TARGET] = feeds[TARGET].astype(tg.graph.values[TARGET].dtype, copy=False)
        self.step_count += 1
        feeds.update(self.optimizer.scalars(self.step_count))
        if tg.uses_step:
            feeds[STEP] = np.array(self.step_count, dtype=np.int32)
        (loss,) = exe.run_swap(feeds, swap=tg.swaps, fetch=[tg.loss])
        return float(loss)

    # ---------------------------------------------------------------- export
    def to_onnx(self) -> onnx.ModelProto:
        """The model with its initializers replaced by the trained values."""
        state = self.params
        out = onnx.ModelProto()
        out.CopyFrom(self.proto)
        for init in out.graph.initializer:
            arr = state[init.name]
            init.CopyFrom(numpy_helper.from_array(np.asarray(arr, dtype=arr.dtype), init.name))
        onnx.checker.check_model(out)
        return out

    def export_onnx(self, path: str) -> None:
        """Write the trained model (same graph, updated initializers) to ``path``; passes onnx.checker."""
        onnx.save(self.to_onnx(), path)

    def predict(self, *inputs: Any) -> list[np.ndarray]:
        """Run the trained model for inference (compiled from the exported graph)."""
        from . import compile as compile_model
        from .frontend import load_onnx

        feeds = _bind(self._model_inputs, list(inputs), "inputs")
        graph = load_onnx(self.to_onnx(), {k: v.shape for k, v in feeds.items()})
        return compile_model(graph, target=self.target, cache=False).run(**feeds)


__all__ = ["Trainer", "build_training_graph", "grad"]
