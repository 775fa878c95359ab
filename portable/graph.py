"""A small SSA graph IR: values with static shapes and dtypes, nodes that name an operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TensorInfo:
    """Static shape and dtype of one value."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Node:
    """One operator application. Empty input names ("") mark omitted optional inputs."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 17
    domain: str = ""

    def describe(self) -> str:
        """Short human-readable identification used in error messages."""
        return f"node {self.name!r} ({self.op}, opset {self.opset})"


@dataclass
class Graph:
    """A whole model: inputs, outputs, nodes in topological order, constants and value infos."""

    name: str
    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    values: dict[str, TensorInfo]
    constants: dict[str, np.ndarray]
    #: constants that are trainable parameters (initializers), as opposed to folded values
    params: set[str] = field(default_factory=set)
    opset: int = 17

    def producers(self) -> dict[str, Node]:
        """Map value name -> node producing it."""
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Map value name -> nodes consuming it (a node appears once per use)."""
        uses: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    uses.setdefault(i, []).append(n)
        return uses

    def op_types(self) -> list[str]:
        """Distinct operator types in node order."""
        seen: dict[str, None] = {}
        for n in self.nodes:
            seen.setdefault(n.op, None)
        return list(seen)

    def prune(self) -> None:
        """Drop nodes and constants that no graph output depends on."""
        needed = set(self.outputs)
        kept: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.outputs):
                kept.append(n)
                needed.update(i for i in n.inputs if i)
        self.nodes = kept[::-1]
        self.constants = {k: v for k, v in self.constants.items() if k in needed}
        self.values = {k: v for k, v in self.values.items() if k in needed or k in self.inputs}
