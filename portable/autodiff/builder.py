"""GradBuilder: appends new nodes of registered operators to a Graph, inferring their types."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ModelError
from ..graph import Graph, Node, TensorInfo
from ..ops.infer import infer_node
from ..ops.registry import REGISTRY


class GradBuilder:
    """Emits nodes into ``graph`` (appended, so topological order holds) with fresh value names."""

    def __init__(self, graph: Graph, prefix: str = "grad"):
        self.graph = graph
        self.prefix = prefix
        self._count = 0
        #: input indices of the node being differentiated whose gradients are wanted
        self.wanted: set[int] = set()

    # ------------------------------------------------------------ queries
    def info(self, name: str) -> TensorInfo:
        """Static shape and dtype of a value."""
        return self.graph.values[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """Static shape of a value."""
        return tuple(self.graph.values[name].shape)

    def dtype(self, name: str) -> str:
        """Dtype of a value."""
        return self.graph.values[name].dtype

    def needs(self, index: int) -> bool:
        """Whether the gradient of input ``index`` of the current node is wanted."""
        return index in self.wanted

    # ------------------------------------------------------------ emitting
    def fresh(self, hint: str) -> str:
        """A new unique value name."""
        self._count += 1
        name = f"{self.prefix}/{hint}_{self._count}"
        while name in self.graph.values:
            self._count += 1
            name = f"{self.prefix}/{hint}_{self._count}"
        return name

    def const(self, value: Any, dtype: str | None = None, hint: str = "c") -> str:
        """A new constant value."""
        arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
        name = self.fresh(hint)
        self.graph.constants[name] = arr
        self.graph.values[name] = TensorInfo(tuple(arr.shape), str(arr.dtype))
        return name

    def scalar(self, value: float, like: str) -> str:
        """A 0-d constant with the dtype of value ``like``."""
        return self.const(np.array(value, dtype=self.dtype(like)), hint="s")

    def emit(self, op_type: str, inputs: Sequence[str], attrs: dict[str, Any] | None = None,
             n_out: int = 1, hint: str | None = None, out_names: Sequence[str] | None = None) -> list[str]:
        """Append one ``op_type`` node and return its output value names (``out_names`` if given)."""
        if op_type not in REGISTRY:
            raise ModelError(f"autodiff needs operator {op_type}, which is not registered")
        outs = list(out_names) if out_names else [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
        node = Node(op_type, outs[0].replace("/", "_"), [i or "" for i in inputs], outs, dict(attrs or {}),
                    self.graph.opset)
        self._infer(node)
        self.graph.nodes.append(node)
        return node.outputs

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        """Append a single-output node; returns its output name."""
        return self.emit(op_type, list(inputs), attrs)[0]

    def output_infos(self, node: Node) -> list[TensorInfo]:
        """Shapes and dtypes of every output of an existing node (including pruned unused ones)."""
        probe = Node(node.op, node.name, list(node.inputs), [f"{node.name}::probe{i}" for i in range(16)],
                     node.attrs, node.opset)
        saved = dict(self.graph.values)
        try:
            self._infer(probe)
            return [self.graph.values[o] for o in probe.outputs]
        finally:
            self.graph.values = saved

    def _infer(self, node: Node) -> None:
        infer_node(node, self.graph.values, self.graph.constants, count_outputs=False)

    # ------------------------------------------------------------ common gradient idioms
    def add(self, a: str, b: str) -> str:
        """a + b."""
        return self.op("Add", a, b)

    def mul(self, a: str, b: str) -> str:
        """a * b (broadcasting)."""
        return self.op("Mul", a, b)

    def scale(self, a: str, factor: float) -> str:
        """a * factor (no node when factor is 1)."""
        return a if factor == 1.0 else self.op("Mul", a, self.scalar(factor, a))

    def neg(self, a: str) -> str:
        """-a."""
        return self.op("Neg", a)

    def sum_to(self, g: str, shape: Sequence[int]) -> str:
        """Sum ``g`` over the axes numpy broadcasting expanded to reach ``g``'s shape from ``shape``."""
        shape = tuple(int(s) for s in shape)
        if self.shape(g) == shape:
            return g
        return self.op("SumTo", g, shape=list(shape))

    def unbroadcast(self, g: str, like: str) -> str:
        """Gradient ``g`` of a broadcast output reduced to the shape of input ``like``."""
        return self.sum_to(g, self.shape(like))

    def broadcast_to(self, g: str, shape: Sequence[int]) -> str:
        """``g`` broadcast (numpy rules) to ``shape``."""
        shape = tuple(int(s) for s in shape)
        if self.shape(g) == shape:
            return g
        return self.op("BroadcastTo", g, shape=list(shape))

    def reshape(self, g: str, shape: Sequence[int]) -> str:
        """``g`` reshaped to the static ``shape``."""
        shape = tuple(int(s) for s in shape)
        if self.shape(g) == shape:
            return g
        return self.op("Reshape", g, self.const(np.array(shape, dtype=np.int64), hint="shape"))

    def transpose(self, g: str, perm: Sequence[int]) -> str:
        """``g`` with axes permuted by ``perm``."""
        perm = [int(p) for p in perm]
        if perm == sorted(perm):
            return g
        return self.op("Transpose", g, perm=perm)
