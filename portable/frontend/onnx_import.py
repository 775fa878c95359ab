"""ONNX -> Graph: parse, check, convert old opsets, fold constants and shape subgraphs, infer types.

Shapes are static: a symbolic dimension (``dim_param``) takes the value the caller gives in
``shapes`` or 1. Every node whose inputs are all known at compile time is evaluated here with
onnx's reference evaluator (so ``Shape -> Gather -> Concat -> Reshape`` chains fold away), the
rest keep their node and get their output types from the operator's own tensor expression.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import ops  # noqa: F401  (registers the operators)
from ..errors import ModelError, UnsupportedOperatorError
from ..graph import Graph, Node, TensorInfo
from ..ops.infer import infer_node
from ..ops.registry import REGISTRY

#: opsets of the default domain this importer understands natively; others are converted. Opsets 23-28
#: changed registered operators only by adding element types or backward-compatible variants that the
#: operators implement per ``attrs.opset`` (Mod fmod=0 on floats, SpaceToDepth ``mode``, Range
#: ``stash_type`` which constant folding evaluates).
MIN_OPSET, MAX_OPSET = 7, 28
#: ops evaluated even when the result is large, since their runtime form needs constants anyway
ALWAYS_FOLD = {"Constant", "ConstantOfShape", "Shape", "Size", "Range", "EyeLike"}
#: ops that are the identity at inference
INFERENCE_IDENTITY = {"Identity", "Dropout"}

log = logging.getLogger("portable.frontend")


def _load_proto(model: Any) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(model))
        except Exception as exc:  # protobuf raises DecodeError
            raise ModelError(f"bytes are not a valid ONNX model: {exc}") from exc
    if isinstance(model, (str, os.PathLike)):
        if not os.path.exists(model):
            raise ModelError(f"model file not found: {model}")
        try:
            return onnx.load(os.fspath(model))
        except Exception as exc:
            raise ModelError(f"{model} is not a valid ONNX model: {exc}") from exc
    raise ModelError(f"load_onnx expects a path, bytes or onnx.ModelProto, got {type(model).__name__}")


def _attr_dict(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS:
            out[a.name] = a  # subgraphs are kept raw; ops using them are unsupported
        else:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [x.decode() for x in v]
            elif isinstance(v, onnx.TensorProto):
                v = numpy_helper.to_array(v)
            out[a.name] = v
    return out


def _np_dtype_name(elem_type: int) -> str:
    return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))


class _Importer:
    def __init__(self, proto: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]] | None,
                 keep_params: bool = False):
        self.proto = proto
        #: training import: float initializers stay values (never folded away), Dropout stays a node
        self.keep_params = keep_params
        self.kept: set[str] = set()
        self.user_shapes = dict(shapes or {})
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.values: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.alias: dict[str, str] = {}

    def run(self) -> Graph:
        g = self.proto.graph
        self._check_supported()
        for init in g.initializer:
            arr = numpy_helper.to_array(init)
            self.constants[init.name] = arr
            self.values[init.name] = TensorInfo(tuple(arr.shape), str(arr.dtype))
            if self.keep_params and arr.dtype.kind == "f":
                self.kept.add(init.name)
        inputs = []
        for vi in g.input:
            if vi.name in self.constants:
                continue
            inputs.append(vi.name)
            self.values[vi.name] = self._input_info(vi)
        for unused in set(self.user_shapes) - set(inputs):
            raise ModelError(f"shapes given for {unused!r}, which is not a graph input; inputs are {inputs}")
        for i, np_node in enumerate(g.node):
            self._visit(np_node, i)
        outputs = [self._resolve(o.name) for o in g.output]
        for o, vi in zip(outputs, g.output):
            if o not in self.values:
                raise ModelError(f"graph output {vi.name!r} is produced by no node")
        params = {init.name for init in g.initializer}
        graph = Graph(g.name or "model", inputs, outputs, self.nodes, self.values, self.constants,
                      params, self.opset)
        graph.output_names = [o.name for o in g.output]  # type: ignore[attr-defined]
        graph.source_proto = self.proto  # type: ignore[attr-defined]
        graph.prune()
        return graph

    # ---------------------------------------------------------------- checks
    def _check_supported(self) -> None:
        problems = []
        for i, n in enumerate(self.proto.graph.node):
            name = n.name or f"{n.op_type}_{i}"
            if n.domain not in ("", "ai.onnx"):
                dom_opset = next((o.version for o in self.proto.opset_import if o.domain == n.domain), 0)
                problems.append((f"{n.domain}.{n.op_type}", name, dom_opset, "custom domain not supported"))
                continue
            op = REGISTRY.get(n.op_type)
            if op is None and n.op_type not in INFERENCE_IDENTITY:
                problems.append((n.op_type, name, self.opset, "no implementation"))
            elif op is not None and self.opset < op.since_version:
                problems.append((n.op_type, name, self.opset, f"supported from opset {op.since_version}"))
        if problems:
            raise UnsupportedOperatorError(problems)

    def _input_info(self, vi: onnx.ValueInfoProto) -> TensorInfo:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"graph input {vi.name!r} is not a tensor; only tensor inputs are supported")
        dims = []
        for d in tt.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else -1)
        if vi.name in self.user_shapes:
            given = tuple(int(x) for x in self.user_shapes[vi.name])
            if len(given) != len(dims) or any(d not in (-1, g) for d, g in zip(dims, given)):
                raise ModelError(f"shape {given} given for input {vi.name!r} does not fit its declared "
                                 f"shape {tuple(d if d >= 0 else '?' for d in dims)}")
            dims = list(given)
        dims = [1 if d < 0 else d for d in dims]
        return TensorInfo(tuple(dims), _np_dtype_name(tt.elem_type))

    # ---------------------------------------------------------------- nodes
    def _resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def _visit(self, np_node: onnx.NodeProto, index: int) -> None:
        name = np_node.name or f"{np_node.op_type}_{index}"
        inputs = [self._resolve(i) if i else "" for i in np_node.input]
        node = Node(np_node.op_type, name, inputs, list(np_node.output), _attr_dict(np_node), self.opset)
        for i in inputs:
            if i and i not in self.values:
                raise ModelError(f"{node.describe()}: input {i!r} is produced by no earlier node "
                                 "(graph not in topological order, or a missing initializer)")
        if node.op in INFERENCE_IDENTITY and not (self.keep_params and node.op in REGISTRY):
            self.alias[node.outputs[0]] = inputs[0]
            for extra in node.outputs[1:]:  # Dropout mask: all true at inference
                if extra:
                    self._set_const(extra, np.ones(self.values[inputs[0]].shape, dtype=bool))
            return
        live = [i for i in inputs if i]
        if node.op == "Shape" or node.op == "Size":
            self._fold_shape(node)
            return
        if node.op in ALWAYS_FOLD or all(i in self.constants and i not in self.kept for i in live):
            self._fold(node, np_node)
            return
        if all(self._known(i) for i in live) and self._try_fold(node, np_node):
            return  # some inputs have no elements, so their value is known too
        self._infer(node)
        if all(not o or self.values[o].size == 0 for o in node.outputs):
            for o in node.outputs:  # an empty result is a constant: no kernel computes it
                if o:
                    self._set_const(o, np.zeros(self.values[o].shape, dtype=self.values[o].dtype))
            return
        self.nodes.append(node)

    def _known(self, name: str) -> bool:
        """Whether the value ``name`` is known at compile time: a (non-parameter) constant or empty."""
        if name in self.constants:
            return name not in self.kept
        return self.values[name].size == 0

    def _value(self, name: str) -> np.ndarray:
        """Compile-time value of a constant, or the (empty) array a zero-size value must hold."""
        if name in self.constants:
            return self.constants[name]
        info = self.values[name]
        if info.size:
            raise KeyError(name)
        return np.zeros(info.shape, dtype=info.dtype)

    def _try_fold(self, node: Node, np_node: onnx.NodeProto) -> bool:
        """Fold a node some of whose inputs are empty tensors; False if the evaluator cannot."""
        try:
            self._fold(node, np_node)
        except ModelError as exc:
            log.debug("%s: not folded over its empty inputs (%s); compiling it", node.describe(), exc)
            return False
        return True

    def _set_const(self, name: str, value: np.ndarray) -> None:
        value = np.asarray(value)
        self.constants[name] = value
        self.values[name] = TensorInfo(tuple(value.shape), str(value.dtype))

    def _fold_shape(self, node: Node) -> None:
        shape = np.array(self.values[node.inputs[0]].shape, dtype=np.int64)
        if node.op == "Size":
            self._set_const(node.outputs[0], np.array(shape.prod(), dtype=np.int64))
            return
        start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
        self._set_const(node.outputs[0], shape[start:end])

    def _fold(self, node: Node, np_node: onnx.NodeProto) -> None:
        from onnx.reference import ReferenceEvaluator

        live = [i for i in node.inputs if i]
        missing = [i for i in live if i not in self.constants and self.values[i].size != 0]
        if missing:
            raise ModelError(f"{node.describe()}: needs compile-time constant inputs, but {missing} "
                             "are computed at run time")
        feeds = {i: self._value(i) for i in live}
        renamed = helper.make_node(np_node.op_type, node.inputs, node.outputs, domain=np_node.domain)
        renamed.attribute.extend(np_node.attribute)
        vis = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(feeds[i].dtype), feeds[i].shape)
               for i in dict.fromkeys(live)]
        outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.outputs if o]
        model = helper.make_model(helper.make_graph([renamed], "fold", vis, outs),
                                  opset_imports=[helper.make_opsetid("", self.opset)])
        try:
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception as exc:
            raise ModelError(f"{node.describe()}: constant evaluation failed: {exc}") from exc
        for o, r in zip([o for o in node.outputs if o], results):
            self._set_const(o, np.asarray(r))

    def _infer(self, node: Node) -> None:
        infer_node(node, self.values, self.constants)


def load_onnx(model: Any, shapes: Mapping[str, tuple[int, ...]] | None = None,
              keep_params: bool = False) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) into a portable Graph.

    ``shapes`` fixes symbolic input dimensions (default 1). ``keep_params`` (training) keeps float
    initializers as values that no node is folded over, and keeps Dropout nodes.
    Raises UnsupportedOperatorError
    listing every unsupported operator at once, or ModelError for malformed models.
    """
    proto = _load_proto(model)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"model fails the ONNX checker: {str(exc).splitlines()[0]}") from exc
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelError("model imports no default-domain opset")
    if opset < MIN_OPSET or opset > MAX_OPSET:
        proto = _convert_opset(proto, opset)
    return _Importer(proto, shapes, keep_params).run()


def _changed_after(proto: onnx.ModelProto, version: int, opset: int) -> list[str]:
    """Default-domain op types of ``proto`` whose schema changed after ``version`` (up to ``opset``)."""
    changed = set()
    for n in proto.graph.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        try:
            if onnx.defs.get_schema(n.op_type, opset).since_version > version:
                changed.add(n.op_type)
        except Exception:  # no schema (a portable-only op): nothing known to have changed
            continue
    return sorted(changed)


def _convert_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Convert a model whose opset is outside MIN_OPSET..MAX_OPSET to the nearest native one.

    A newer model whose down-conversion fails (its nodes use a variant the older opset cannot
    express) is imported natively when every operator is registered, since each operator
    handles its node's opset itself; a warning names the operators whose schema is newer than
    MAX_OPSET, whose new semantics portable may not implement.
    """
    target = MIN_OPSET if opset < MIN_OPSET else MAX_OPSET
    try:
        return onnx.version_converter.convert_version(proto, target)
    except Exception as exc:
        error = exc
    unknown = sorted({n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx")
                      or (n.op_type not in REGISTRY and n.op_type not in INFERENCE_IDENTITY)})
    if opset < MIN_OPSET or unknown:
        why = f"; operators {unknown} are not registered either" if unknown else ""
        raise ModelError(f"model opset {opset} is outside {MIN_OPSET}..{MAX_OPSET} and converting it "
                         f"to opset {target} failed: {error}{why}") from error
    changed = _changed_after(proto, MAX_OPSET, opset)
    log.warning("model opset %d is newer than %d and converting it down failed (%s); importing it natively%s",
                opset, MAX_OPSET, str(error).splitlines()[0] if str(error) else type(error).__name__,
                f": operators {changed} changed after opset {MAX_OPSET}, check their results" if changed
                else "")
    return proto
