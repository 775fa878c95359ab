"""Helpers shared by operator definitions."""

from __future__ import annotations

from typing import Sequence

import tvm  # noqa: F401  (names the expression type in annotations)
from tvm import te, tirx

from .registry import shape_of


def normalize_axis(axis: int, rank: int) -> int:
    """ONNX negative axis -> non-negative axis."""
    return axis + rank if axis < 0 else axis


def broadcast_shape(*shapes: Sequence[int]) -> tuple[int, ...]:
    """Numpy multidirectional broadcasting of static shapes."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = {s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcast_index(t: te.Tensor, out_index: Sequence["tvm.ir.expr.Expr"]) -> list["tvm.ir.expr.Expr"]:
    """Index into ``t`` for an element of the broadcast output at ``out_index``."""
    shape = shape_of(t)
    offset = len(out_index) - len(shape)
    return [0 if d == 1 else out_index[offset + i] for i, d in enumerate(shape)]


def guarded_read(cond: "tvm.ir.expr.Expr", value: "tvm.ir.expr.Expr", other: "tvm.ir.expr.Expr") -> "tvm.ir.expr.Expr":
    """``Select(cond, value, other)`` where ``value`` reads memory at indices made safe (clamped, or
    selected) for the elements where ``cond`` fails.

    A Select evaluates both sides (a vector blend), so those indices must stay in bounds; but TVM's
    simplifier assumes a Select's condition inside its true side, where the clamps are redundant,
    and drops them: ``Select(c < 40, x[min(c, 39)], 0)`` became ``Select(c < 40, x[c], 0)``, which
    read up to 8 channel planes past the end of a 40-channel input (and segfaulted on one at the
    end of a mapping). Behind ``likely`` the condition is opaque to the simplifier; codegen
    treats ``likely`` as its argument."""
    return tirx.Select(tirx.likely(cond), value, other)


def const(value: float | int, dtype: str) -> "tvm.ir.expr.Expr":
    """A TIR immediate of the given dtype."""
    return tirx.const(value, dtype)
