"""The adjoint registry: how to differentiate each operator type.

An adjoint is ``fn(b, node, grads) -> list[str | None]``: ``b`` is the :class:`GradBuilder`
emitting new Graph nodes, ``node`` the forward node, ``grads`` the gradient value name of each
of its outputs (None where no gradient flows). It returns one gradient value name per node
input (None for inputs that get no gradient). Adjoints only build graph nodes of registered
operators, so the backward pass is compiled by the same compiler as the forward pass.

The registry is independent of :mod:`portable.ops` so operator modules can declare their
adjoints next to their algorithms without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

AdjointFn = Callable[[Any, Any, list], list]


@dataclass
class AdjointDef:
    """The adjoint of one operator type and which of its inputs are not differentiable."""

    op_type: str
    fn: AdjointFn
    #: inputs that never get a gradient (indices, shapes, masks, integer data)
    nondiff_inputs: tuple[int, ...] = ()


ADJOINTS: dict[str, AdjointDef] = {}


def adjoint(op_types: str | Sequence[str], nondiff: tuple[int, ...] = ()) -> Callable[[AdjointFn], AdjointFn]:
    """Decorator registering ``fn`` as the adjoint of one or more operator types."""
    names = [op_types] if isinstance(op_types, str) else list(op_types)

    def wrap(fn: AdjointFn) -> AdjointFn:
        for name in names:
            ADJOINTS[name] = AdjointDef(name, fn, tuple(nondiff))
        return fn

    return wrap


def get_adjoint(op_type: str) -> AdjointDef | None:
    """The adjoint of ``op_type`` or None; also records it on the operator's registry entry."""
    adj = ADJOINTS.get(op_type)
    if adj is not None:
        from ..ops.registry import REGISTRY

        entry = REGISTRY.get(op_type)
        if entry is not None and entry.adjoint is None:
            entry.adjoint = adj.fn
            entry.nondiff_inputs = adj.nondiff_inputs
    return adj
