"""Data movement: reshapes, transposes, concatenation, slicing, gathering, padding, tiling.

All are ``Pattern.INJECTIVE``: each output element reads one input element at a computed index,
so they inline into whatever consumes them. Ops whose result is fully known at compile time
(Shape, Size, Constant, ConstantOfShape, Range) are evaluated by the importer; they are
registered so the importer recognises them, with a compute used only for runtime inputs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tvm import te, tirx

from .common import normalize_axis
from .registry import Attrs, Pattern, const_value, register, shape_of


def _unravel(flat: "tirx.PrimExpr", shape: Sequence[int]) -> list:
    idx = []
    for d in reversed(shape):
        idx.append(tirx.floormod(flat, d) if d != 1 else tirx.const(0, "int32"))
        flat = tirx.floordiv(flat, d)
    return idx[::-1]


def reshape_to(x: te.Tensor, new_shape: Sequence[int], name: str = "reshape") -> te.Tensor:
    """Row-major reshape of ``x`` to ``new_shape`` (element counts must match)."""
    old = shape_of(x)
    new_shape = tuple(int(s) for s in new_shape)
    if int(np.prod(old)) != int(np.prod(new_shape)):
        raise ValueError(f"cannot reshape {old} to {new_shape}")
    if tuple(old) == new_shape:
        return te.compute(new_shape, lambda *i: x[i], name=name, tag="injective")

    def body(*idx):  # type: ignore[no-untyped-def]
        flat = tirx.const(0, "int64") if not idx else 0
        for i, d in zip(idx, new_shape):
            flat = flat * d + i
        return x[tuple(_unravel(flat, old))]

    return te.compute(new_shape, body, name=name, tag="injective")


def infer_reshape(old: Sequence[int], target: Sequence[int], allowzero: bool) -> tuple[int, ...]:
    """ONNX Reshape semantics for 0 (copy) and -1 (infer) entries."""
    out = []
    for i, s in enumerate(target):
        s = int(s)
        out.append(old[i] if s == 0 and not allowzero else s)
    if out.count(-1) > 1:
        raise ValueError(f"shape {list(target)} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        total = int(np.prod(old))
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {tuple(old)} to {list(target)}")
        out[out.index(-1)] = total // known
    return tuple(out)


@register("Reshape", Pattern.INJECTIVE, "elemwise", const_inputs=(1,), since_version=5)
def reshape(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Reshape (shape is a constant input)."""
    x = ins[0]
    target = const_value(ins[1], attrs, "shape").tolist()
    try:
        new = infer_reshape(shape_of(x), target, bool(attrs.get("allowzero", 0)))
        return [reshape_to(x, new)]
    except ValueError as exc:
        raise attrs.fail(str(exc)) from exc


@register("Flatten", Pattern.INJECTIVE, "elemwise")
def flatten(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Flatten to 2-D at ``axis``."""
    x = ins[0]
    s = shape_of(x)
    axis = normalize_axis(attrs.get("axis", 1), len(s))
    return [reshape_to(x, (int(np.prod(s[:axis])), int(np.prod(s[axis:]))), name="flatten")]


def _compile_time_only(op_type: str) -> None:
    @register(op_type, Pattern.OPAQUE, "generic")
    def compute(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
        raise attrs.fail(f"{op_type} must be computable at compile time (its inputs must be constants)")


for _op in ("Shape", "Size", "Constant", "ConstantOfShape", "Range", "EyeLike"):
    _compile_time_only(_op)
