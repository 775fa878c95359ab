"""The operator registry: one entry per ONNX operator type.

An entry holds the algorithm as a tensor expression (``compute``), the fusion pattern the
compiler uses to group it with its neighbours, the schedule template family that gives it a
schedule, which inputs must be compile-time constants, and (for differentiable operators) the
adjoint. Output shapes and dtypes are *derived* from the compute itself (it is called on
placeholders), so the algorithm is the single source of truth.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from tvm import te

from ..errors import ModelError


class Pattern(enum.IntEnum):
    """How an operator may be fused (lower is easier to fuse)."""

    ELEMWISE = 0  # out[i] depends on in[i] (with numpy broadcasting)
    INJECTIVE = 1  # each output element reads a few input elements (reshape, transpose, slice...)
    ANCHOR = 2  # a reduction or other heavy kernel; starts a fusion group, may absorb an epilogue
    OPAQUE = 3  # never fused with anything


class Attrs:
    """Node attributes plus context (opset, node description) handed to a compute."""

    def __init__(self, attrs: dict[str, Any], opset: int, node_desc: str, n_outputs: int | None = None):
        self._attrs = attrs
        self.opset = opset
        self.node_desc = node_desc
        #: number of outputs the node declares (Split without sizes divides by it); None if unknown
        self.n_outputs = n_outputs

    def get(self, name: str, default: Any = None) -> Any:
        """Attribute value or ``default``."""
        return self._attrs.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self._attrs

    def fail(self, message: str) -> ModelError:
        """An error naming the node; raise the result."""
        return ModelError(f"{self.node_desc}: {message}")


TensorOrConst = Any  # te.Tensor, np.ndarray (for const inputs) or None (omitted optional input)
ComputeFn = Callable[[Sequence[TensorOrConst], Attrs], Sequence[te.Tensor]]


@dataclass
class OpDef:
    """Everything portable knows about one operator type."""

    op_type: str
    compute: ComputeFn
    pattern: Pattern
    family: str
    const_inputs: tuple[int, ...] = ()
    since_version: int = 1
    #: adjoint(grad_builder, node, output_grads) -> input grads; set by the autodiff module
    adjoint: Callable | None = None
    nondiff_inputs: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, OpDef] = {}


def register(
    op_types: str | Sequence[str],
    pattern: Pattern,
    family: str = "generic",
    const_inputs: tuple[int, ...] = (),
    since_version: int = 1,
) -> Callable[[ComputeFn], ComputeFn]:
    """Decorator registering ``compute`` for one or more ONNX operator types."""
    names = [op_types] if isinstance(op_types, str) else list(op_types)

    def wrap(fn: ComputeFn) -> ComputeFn:
        for name in names:
            if name in REGISTRY:
                raise RuntimeError(f"operator {name} registered twice")
            REGISTRY[name] = OpDef(name, fn, pattern, family, const_inputs, since_version)
        return fn

    return wrap


def lookup(op_type: str) -> OpDef | None:
    """The registry entry for ``op_type`` or None."""
    return REGISTRY.get(op_type)


def const_value(x: TensorOrConst, attrs: Attrs, what: str) -> np.ndarray:
    """Return a constant input as numpy, or fail naming the input."""
    if isinstance(x, np.ndarray):
        return x
    raise attrs.fail(f"input '{what}' must be a compile-time constant (portable compiles static shapes)")


def shape_of(t: te.Tensor) -> tuple[int, ...]:
    """Static shape of a TE tensor as python ints."""
    return tuple(int(d) for d in t.shape)
