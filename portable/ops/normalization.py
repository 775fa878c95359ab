"""Normalisations: LayerNormalization, InstanceNormalization, MeanVarianceNormalization.

Each computes the mean (a reduction), then the variance as the mean of squared deviations (a
second reduction, tag ``anchor``: two passes are more accurate than E[x^2] - E[x]^2), then an
elementwise output stage. BatchNormalization (inference) lives in ``elementwise.py``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tvm
from tvm import te

from .common import broadcast_index, const, normalize_axis
from .reduce import elemwise_stage, is_float, reduce_axes_compute, reduced_index
from .registry import Attrs, Pattern, register, shape_of

Expr = tvm.ir.expr.Expr

#: ONNX TensorProto data type -> dtype, for LayerNormalization's stash_type
_STASH = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def mean_and_variance(x: te.Tensor, axes: Sequence[int], name: str) -> tuple[te.Tensor, te.Tensor]:
    """Keepdims mean and (biased) variance of ``x`` over ``axes``, in ``x``'s dtype."""
    shape, rank = shape_of(x), len(x.shape)
    inv_n = const(1.0 / int(np.prod([shape[a] for a in axes])), x.dtype)
    total = reduce_axes_compute(x, axes, True, te.sum, lambda i: x[tuple(i)], f"{name}_sum", tag="reduce")
    mean = elemwise_stage(shape_of(total), lambda *i: total[i] * inv_n, f"{name}_mean")

    def sq_dev(i: list) -> Expr:
        d = x[tuple(i)] - mean[tuple(reduced_index(i, rank, axes, True))]
        return d * d

    sq = reduce_axes_compute(x, axes, True, te.sum, sq_dev, f"{name}_sqdev", tag="anchor")
    var = elemwise_stage(shape_of(sq), lambda *i: sq[i] * inv_n, f"{name}_var")
    return mean, var


def _check_float(x: te.Tensor, attrs: Attrs, what: str = "X") -> None:
    if not is_float(x.dtype):
        raise attrs.fail(f"input {what} must be a floating-point tensor, got {x.dtype}")


def _cast(x: te.Tensor, dtype: str, name: str) -> te.Tensor:
    if str(x.dtype) == dtype:
        return x
    return elemwise_stage(shape_of(x), lambda *i: x[i].astype(dtype), name)


@register("LayerNormalization", Pattern.ANCHOR, "norm", since_version=17)
def layer_normalization(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX LayerNormalization over axes [axis, rank); outputs Y, Mean and InvStdDev."""
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    _check_float(x, attrs)
    rank = len(x.shape)
    axis = int(attrs.get("axis", -1))
    if not -rank <= axis < rank:
        raise attrs.fail(f"axis {axis} is out of range for input of rank {rank}")
    axes = list(range(normalize_axis(axis, rank), rank))
    stash = int(attrs.get("stash_type", 1))
    if stash not in _STASH:
        raise attrs.fail(f"stash_type {stash} is not a floating-point TensorProto type")
    cdt = _STASH[stash]
    for t, what in ((scale, "Scale"), (bias, "B")):
        if t is not None and not _broadcasts_to(shape_of(t), shape_of(x)):
            raise attrs.fail(f"input {what} of shape {shape_of(t)} does not broadcast to X {shape_of(x)}")
    xc = _cast(x, cdt, "ln_cast")
    mean, var = mean_and_variance(xc, axes, "ln")
    eps = const(float(attrs.get("epsilon", 1e-5)), cdt)
    inv_std = elemwise_stage(shape_of(var), lambda *i: const(1.0, cdt) / te.sqrt(var[i] + eps), "ln_inv_std")

    def body(*i: Expr) -> Expr:
        r = tuple(reduced_index(i, rank, axes, True))
        y = ((xc[i] - mean[r]) * inv_std[r]).astype(x.dtype) * scale[tuple(broadcast_index(scale, i))]
        if bias is not None:
            y = y + bias[tuple(broadcast_index(bias, i))]
        return y

    y = elemwise_stage(shape_of(x), body, "layer_norm")
    return [y, mean, inv_std]


def _broadcasts_to(small: Sequence[int], big: Sequence[int]) -> bool:
    if len(small) > len(big):
        return False
    return all(s in (1, b) for s, b in zip(small[::-1], big[::-1]))


@register("InstanceNormalization", Pattern.ANCHOR, "norm")
def instance_normalization(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX InstanceNormalization: per (n, c) normalisation over the spatial axes, then scale[c], B[c]."""
    x, scale, bias = ins[0], ins[1], ins[2]
    _check_float(x, attrs, "input")
    shape = shape_of(x)
    if len(shape) < 3:
        raise attrs.fail(f"input must be N x C x spatial..., got shape {shape}")
    for t, what in ((scale, "scale"), (bias, "B")):
        if shape_of(t) != (shape[1],):
            raise attrs.fail(f"input {what} must have shape ({shape[1]},), got {shape_of(t)}")
    axes = list(range(2, len(shape)))
    mean, var = mean_and_variance(x, axes, "in")
    eps = const(float(attrs.get("epsilon", 1e-5)), x.dtype)

    def body(*i: Expr) -> Expr:
        r = tuple(reduced_index(i, len(shape), axes, True))
        return scale[i[1]] * (x[i] - mean[r]) / te.sqrt(var[r] + eps) + bias[i[1]]

    return [elemwise_stage(shape, body, "instance_norm")]


@register("MeanVarianceNormalization", Pattern.ANCHOR, "norm", since_version=9)
def mean_variance_normalization(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX MeanVarianceNormalization: ``(x - mean) / (sqrt(var) + 1e-9)`` over ``axes``."""
    x = ins[0]
    _check_float(x, attrs)
    rank = len(x.shape)
    raw = [int(a) for a in attrs.get("axes", [0, 2, 3])]
    if any(not -rank <= a < rank for a in raw):
        raise attrs.fail(f"axes {raw} are out of range for input of rank {rank}")
    axes = sorted({normalize_axis(a, rank) for a in raw})
    mean, var = mean_and_variance(x, axes, "mvn")
    eps = const(1e-9, x.dtype)

    def body(*i: Expr) -> Expr:
        r = tuple(reduced_index(i, rank, axes, True))
        return (x[i] - mean[r]) / (te.sqrt(var[r]) + eps)

    return [elemwise_stage(shape_of(x), body, "mvn")]
