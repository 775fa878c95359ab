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


def const(value: float | int, dtype: str) -> "tvm.ir.expr.Expr":
    """A TIR immediate of the given dtype."""
    return tirx.const(value, dtype)
