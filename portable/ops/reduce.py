"""Reductions (Reduce*, ArgMax/ArgMin) and the softmax family (Softmax, LogSoftmax, Hardmax).

All are ``Pattern.ANCHOR``. The main reduction stage of each operator is tagged ``anchor``,
secondary reductions (the max of a stable softmax, the index search of an arg-reduction)
``reduce``, and the elementwise stages around them ``elemwise``, so a schedule can inline the
elementwise work and keep each reduction row in cache.

Per-opset semantics follow the ONNX schemas:

* ``axes`` is an attribute before opset 13 for ReduceSum and before opset 18 for the other
  Reduce* operators, and an optional constant input from then on; ``noop_with_empty_axes``
  exists only in the input form. Empty or absent axes mean "all axes" unless the no-op flag is
  set, in which case only the elementwise parts of composite reductions run (ReduceLogSum gives
  ``log(x)``, ReduceSumSquare ``x * x``...).
* Softmax, LogSoftmax and Hardmax before opset 13 coerce the input to 2-D at ``axis`` (default 1)
  and normalise over the flattened tail; from opset 13 they normalise over ``axis`` only
  (default -1).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tvm
from tvm import te, tirx

from . import fastmath
from .common import const, normalize_axis
from .registry import Attrs, Pattern, register, shape_of

Expr = tvm.ir.expr.Expr
ValueFn = Callable[[list], Expr]
Reducer = Callable[..., Expr]

#: opset from which ``axes`` is an input rather than an attribute
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_AXES_INPUT_DEFAULT = 18


def is_float(dtype: str) -> bool:
    """True for floating-point dtypes."""
    return "float" in str(dtype)


def lowest(dtype: str) -> Expr:
    """-inf for floats, the smallest value for integers."""
    return const(float("-inf"), dtype) if is_float(dtype) else te.min_value(dtype)


def highest(dtype: str) -> Expr:
    """+inf for floats, the largest value for integers."""
    return const(float("inf"), dtype) if is_float(dtype) else te.max_value(dtype)


_prod = te.comm_reducer(lambda a, b: a * b, lambda dtype: const(1, dtype), name="prod")
#: max/min whose identity is -inf/+inf for floats (te.max/te.min start from the lowest/highest finite
#: float, so a row of all -inf would reduce to a finite value)
_max = te.comm_reducer(lambda a, b: tirx.max(a, b), lowest, name="max")
_min = te.comm_reducer(lambda a, b: tirx.min(a, b), highest, name="min")


def reduce_axes_compute(x: te.Tensor, axes: Sequence[int], keepdims: bool, reducer: Reducer,
                        value: ValueFn, name: str, tag: str = "anchor") -> te.Tensor:
    """One reduction stage: ``reducer(value(index_of_x), axis=...)`` over ``axes`` of ``x``.

    ``value`` receives the full index into ``x`` (reduce variables at the reduced axes) and returns
    the expression to reduce; ``reducer`` is ``te.sum``, ``te.max``, ``te.min`` or a comm_reducer.
    """
    shape = shape_of(x)
    axes = sorted(set(axes))
    raxes = {a: te.reduce_axis((0, shape[a]), name=f"r{a}") for a in axes}
    out_shape = reduced_shape(shape, axes, keepdims)

    def body(*idx: Expr) -> Expr:
        it = iter(idx)
        full = []
        for i in range(len(shape)):
            if i in raxes:
                if keepdims:
                    next(it)
                full.append(raxes[i].var)
            else:
                full.append(next(it))
        return reducer(value(full), axis=list(raxes.values()))

    return te.compute(out_shape, body, name=name, tag=tag)


def reduced_shape(shape: Sequence[int], axes: Sequence[int], keepdims: bool) -> tuple[int, ...]:
    """Shape of a reduction of a ``shape`` tensor over ``axes``."""
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)


def reduced_index(idx: Sequence[Expr], rank: int, axes: Sequence[int], keepdims: bool) -> list:
    """Index into a reduction's result (over ``axes`` of a rank-``rank`` tensor) for element ``idx``."""
    if keepdims:
        return [0 if i in axes else v for i, v in enumerate(idx)]
    return [v for i, v in enumerate(idx) if i not in axes]


def elemwise_stage(shape: Sequence[int], fn: Callable[..., Expr], name: str) -> te.Tensor:
    """A pure elementwise te.compute (tag ``elemwise``)."""
    return te.compute(tuple(shape), fn, name=name, tag="elemwise")


# ---------------------------------------------------------------------------------------------
# Reduce*


def reduce_axes_of(op_type: str, ins: Sequence, attrs: Attrs) -> tuple[list[int], bool]:
    """Normalised reduction axes and whether the reduction is a no-op, per the node's opset."""
    rank = len(ins[0].shape)
    if attrs.opset >= _AXES_INPUT_SINCE.get(op_type, _AXES_INPUT_DEFAULT):
        noop = bool(attrs.get("noop_with_empty_axes", 0))
        raw = ins[1] if len(ins) > 1 else None
        if raw is not None and not isinstance(raw, np.ndarray):
            raise attrs.fail("input 'axes' must be a compile-time constant (portable compiles static shapes)")
        axes = [] if raw is None else [int(a) for a in np.asarray(raw).reshape(-1)]
    else:
        noop = False
        axes = [int(a) for a in attrs.get("axes", [])]
    for a in axes:
        if not -rank <= a < rank:
            raise attrs.fail(f"axis {a} is out of range for input of rank {rank}")
    axes = sorted({normalize_axis(a, rank) for a in axes})
    if len(set(axes)) != len(axes):
        raise attrs.fail(f"axes {axes} contain duplicates")
    if not axes:
        return ([] if noop else list(range(rank))), noop
    return axes, False


def _count(x: te.Tensor, axes: Sequence[int]) -> int:
    shape = shape_of(x)
    return int(np.prod([shape[a] for a in axes])) if axes else 1


def _divide(s: te.Tensor, n: int, name: str) -> te.Tensor:
    if is_float(s.dtype):
        return elemwise_stage(shape_of(s), lambda *i: s[i] * const(1.0 / n, s.dtype), name)
    return elemwise_stage(shape_of(s), lambda *i: tirx.truncdiv(s[i], const(n, s.dtype)), name)


def _reduce_op(op_type: str, x: te.Tensor, axes: list[int], keepdims: bool) -> te.Tensor:
    """The reduction ``op_type`` of ``x`` over a non-empty list of ``axes``."""
    rank, dt = len(x.shape), x.dtype
    name = op_type.lower()

    def load(idx: list) -> Expr:
        return x[tuple(idx)]

    def red(reducer: Reducer, value: ValueFn, stage: str = name, tag: str = "anchor") -> te.Tensor:
        return reduce_axes_compute(x, axes, keepdims, reducer, value, stage, tag)

    def post(t: te.Tensor, fn: Callable[[Expr, str], Expr]) -> te.Tensor:
        return elemwise_stage(shape_of(t), lambda *i: fn(t[i], dt), f"{name}_post")

    if op_type == "ReduceSum":
        return red(te.sum, load)
    if op_type == "ReduceMean":
        return _divide(red(te.sum, load, f"{name}_sum"), _count(x, axes), name)
    if op_type in ("ReduceMax", "ReduceMin"):
        reducer = _max if op_type == "ReduceMax" else _min
        if dt == "bool":  # reduce as int8, then back to bool
            r = red(reducer, lambda i: x[tuple(i)].astype("int8"), f"{name}_int8")
            return elemwise_stage(shape_of(r), lambda *i: r[i] != const(0, "int8"), name)
        return red(reducer, load)
    if op_type == "ReduceProd":
        return red(_prod, load)
    if op_type == "ReduceL1":
        return red(te.sum, lambda i: te.abs(x[tuple(i)]))
    if op_type == "ReduceSumSquare":
        return red(te.sum, lambda i: x[tuple(i)] * x[tuple(i)])
    if op_type == "ReduceL2":
        return post(red(te.sum, lambda i: x[tuple(i)] * x[tuple(i)]), _sqrt)
    if op_type == "ReduceLogSum":
        return post(red(te.sum, load), _log)
    if op_type == "ReduceLogSumExp":
        m = reduce_axes_compute(x, axes, True, _max, load, f"{name}_max", tag="reduce")

        def finite_max(full: list) -> Expr:
            # an infinite max (a row of -inf, or +inf entries) is replaced by 0 so no inf - inf occurs
            mi = m[tuple(reduced_index(full, rank, axes, True))]
            return tirx.Select(te.isinf(mi), const(0, dt), mi) if is_float(dt) else mi

        s = red(te.sum, lambda i: _exp(x[tuple(i)] - finite_max(i), dt))

        def body(*i: Expr) -> Expr:
            return _log(s[i], dt) + finite_max(_expand_index(i, rank, axes, keepdims))

        return elemwise_stage(shape_of(s), body, f"{name}_post")
    raise ValueError(f"unknown reduction {op_type}")


def _expand_index(idx: Sequence[Expr], rank: int, axes: Sequence[int], keepdims: bool) -> list:
    """Full rank-``rank`` index (0 at reduced axes) for an element of a reduction's result."""
    if keepdims:
        return list(idx)
    it = iter(idx)
    return [0 if i in axes else next(it) for i in range(rank)]


def _float_fn(fn: Callable[[Expr], Expr]) -> Callable[[Expr, str], Expr]:
    """``fn(v)`` for a float ``v`` of ``dtype``; integers go through float64 and back."""

    def wrapped(v: Expr, dtype: str) -> Expr:
        return fn(v) if is_float(dtype) else fn(v.astype("float64")).astype(dtype)

    return wrapped


_sqrt = _float_fn(te.sqrt)
_log = _float_fn(te.log)
_exp = _float_fn(te.exp)


_NOOP: dict[str, Callable[[Expr, str], Expr]] = {
    "ReduceL1": lambda v, dt: te.abs(v),
    "ReduceL2": lambda v, dt: te.abs(v),
    "ReduceSumSquare": lambda v, dt: v * v,
    "ReduceLogSum": _log,
}


def _noop(op_type: str, x: te.Tensor) -> te.Tensor:
    """Reduction over an empty set of axes: only the elementwise parts remain."""
    fn = _NOOP.get(op_type, lambda v, dt: v)
    return te.compute(shape_of(x), lambda *i: fn(x[i], x.dtype), name=op_type.lower(), tag="anchor")


#: result of each reduction over an empty set (ReduceMax/ReduceMin: the dtype's lowest/highest)
_EMPTY_IDENTITY = {"ReduceSum": 0.0, "ReduceL1": 0.0, "ReduceL2": 0.0, "ReduceSumSquare": 0.0,
                   "ReduceProd": 1.0, "ReduceMean": float("nan"), "ReduceLogSum": float("-inf"),
                   "ReduceLogSumExp": float("-inf")}


def empty_identity(op_type: str, dtype: str) -> Expr:
    """What ``op_type`` gives over an empty set of elements of ``dtype`` (its identity element)."""
    if op_type in ("ReduceMax", "ReduceMin"):
        if dtype == "bool":
            return const(op_type == "ReduceMin", "bool")
        return lowest(dtype) if op_type == "ReduceMax" else highest(dtype)
    value = _EMPTY_IDENTITY[op_type]
    if not is_float(dtype):  # integers have no nan/-inf: an empty mean or log-sum gives 0
        value = int(value) if np.isfinite(value) else 0
    return const(value, dtype)


def _empty_reduce(op_type: str, x: te.Tensor, axes: list[int], keepdims: bool) -> te.Tensor:
    """A reduction over zero elements: the identity everywhere, without reading ``x``."""
    value = empty_identity(op_type, x.dtype)
    shape = reduced_shape(shape_of(x), axes, keepdims)
    return te.compute(shape, lambda *i: value, name=op_type.lower(), tag="anchor")


_BOOL_OK = ("ReduceMax", "ReduceMin")


def _register_reduce(op_type: str) -> None:
    @register(op_type, Pattern.ANCHOR, "reduce", const_inputs=(1,))
    def compute(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
        x = ins[0]
        if x.dtype == "bool" and op_type not in _BOOL_OK:
            raise attrs.fail(f"input is bool; only {' and '.join(_BOOL_OK)} accept bool tensors")
        axes, noop = reduce_axes_of(op_type, ins, attrs)
        keepdims = bool(attrs.get("keepdims", 1))
        if noop or not axes:
            return [_noop(op_type, x)]
        if _count(x, axes) == 0:
            return [_empty_reduce(op_type, x, axes, keepdims)]
        return [_reduce_op(op_type, x, axes, keepdims)]

    compute.__doc__ = f"ONNX {op_type} (axes attribute or constant input, per opset)."


for _op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
            "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"):
    _register_reduce(_op)


# ---------------------------------------------------------------------------------------------
# ArgMax / ArgMin


def first_index_of(x: te.Tensor, target: te.Tensor, axes: Sequence[int], last: bool, name: str,
                    keepdims: bool = True) -> te.Tensor:
    """Row-major flat index (over ``axes``) of the first (or last) element of ``x`` equal to ``target``.

    ``target`` is a keepdims reduction of ``x`` over ``axes`` (its max or min); the result is int64
    with the shape of that reduction (keepdims) or with the axes dropped.
    """
    shape, rank = shape_of(x), len(x.shape)
    strides = {a: int(np.prod([shape[b] for b in axes if b > a])) for a in axes}
    total = int(np.prod([shape[a] for a in axes]))

    def value(i: list) -> Expr:
        key = const(0, "int64")
        for a in axes:
            key = key + i[a].astype("int64") * const(strides[a], "int64")
        hit = x[tuple(i)] == target[tuple(reduced_index(i, rank, axes, True))]
        miss = const(-1, "int64") if last else const(total, "int64")
        return tirx.Select(hit, key, miss)

    return reduce_axes_compute(x, axes, keepdims, te.max if last else te.min, value, name, tag="anchor")


def _register_arg(op_type: str, reducer: Reducer) -> None:
    @register(op_type, Pattern.ANCHOR, "reduce")
    def compute(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
        x = ins[0]
        rank = len(x.shape)
        axis = int(attrs.get("axis", 0))
        if not -rank <= axis < rank:
            raise attrs.fail(f"axis {axis} is out of range for input of rank {rank}")
        axis = normalize_axis(axis, rank)
        keepdims = bool(attrs.get("keepdims", 1))
        last = bool(attrs.get("select_last_index", 0))
        ext = reduce_axes_compute(x, [axis], True, reducer, lambda i: x[tuple(i)],
                                  f"{op_type.lower()}_value", tag="reduce")
        return [first_index_of(x, ext, [axis], last, op_type.lower(), keepdims)]

    compute.__doc__ = f"ONNX {op_type}: int64 index of the extreme value along ``axis``."


_register_arg("ArgMax", _max)
_register_arg("ArgMin", _min)


# ---------------------------------------------------------------------------------------------
# Softmax family


def softmax_axes(attrs: Attrs, rank: int) -> list[int]:
    """Axes a softmax-family node normalises over, per its opset."""
    legacy = attrs.opset < 13
    axis = int(attrs.get("axis", 1 if legacy else -1))
    if rank == 0:
        raise attrs.fail("input must have rank >= 1")
    if not -rank <= axis < rank:
        raise attrs.fail(f"axis {axis} is out of range for input of rank {rank}")
    axis = normalize_axis(axis, rank)
    return list(range(axis, rank)) if legacy else [axis]


def _softmax_parts(x: te.Tensor, axes: list[int], name: str) -> tuple[te.Tensor, te.Tensor, te.Tensor]:
    """Stable softmax pieces: the row max, ``e = exp(x - max)`` and ``sum(e)`` (max and sum keepdims).

    The max starts from the lowest finite float (``te.max``), not -inf like ReduceMax's: that is
    the identity TVM's ``rfactor`` recognises, so schedules can vectorise the max. It changes no
    result: a row of all -inf gets max -FLT_MAX, so ``e`` = exp(-inf) = 0 and the softmax 0/0 =
    NaN, as -inf - -inf = NaN gives with the -inf identity (any finite entry is the max either way).
    ``e`` is its own stage so a schedule may keep each row of it instead of recomputing ``exp``.
    """
    rank = len(x.shape)
    m = reduce_axes_compute(x, axes, True, te.max, lambda i: x[tuple(i)], f"{name}_max", tag="reduce")

    def shifted(*i: Expr) -> Expr:
        return fastmath.exp(x[i] - m[tuple(reduced_index(i, rank, axes, True))])

    e = elemwise_stage(shape_of(x), shifted, f"{name}_exp")
    s = reduce_axes_compute(e, axes, True, te.sum, lambda i: e[tuple(i)], f"{name}_sum", tag="anchor")
    return m, e, s


def _check_float(x: te.Tensor, attrs: Attrs) -> None:
    if not is_float(x.dtype):
        raise attrs.fail(f"input must be a floating-point tensor, got {x.dtype}")


def _softmax_setup(ins: Sequence[te.Tensor], attrs: Attrs, name: str) -> tuple:
    """(x, rank, normalised axes, row max, exp(x - max), row sum of it) shared by Softmax and LogSoftmax."""
    x = ins[0]
    _check_float(x, attrs)
    rank = len(x.shape)
    axes = softmax_axes(attrs, rank)
    m, e, s = _softmax_parts(x, axes, name)
    return x, rank, axes, m, e, s


@register("Softmax", Pattern.ANCHOR, "softmax")
def softmax(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Softmax, ``exp(x - max) / sum(exp(x - max))`` (a multiply by the row's reciprocal)."""
    x, rank, axes, m, e, s = _softmax_setup(ins, attrs, "softmax")

    def body(*i: Expr) -> Expr:
        r = tuple(reduced_index(i, rank, axes, True))
        return e[i] * (const(1, x.dtype) / s[r])

    return [elemwise_stage(shape_of(x), body, "softmax")]


@register("LogSoftmax", Pattern.ANCHOR, "softmax")
def log_softmax(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX LogSoftmax, ``x - max - log(sum(exp(x - max)))``."""
    x, rank, axes, m, _, s = _softmax_setup(ins, attrs, "log_softmax")

    def body(*i: Expr) -> Expr:
        r = tuple(reduced_index(i, rank, axes, True))
        return x[i] - m[r] - te.log(s[r])

    return [elemwise_stage(shape_of(x), body, "log_softmax")]


@register("Hardmax", Pattern.ANCHOR, "softmax")
def hardmax(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Hardmax: 1 at the first maximum of each normalised slice, 0 elsewhere."""
    x = ins[0]
    rank = len(x.shape)
    axes = softmax_axes(attrs, rank)
    shape = shape_of(x)
    m = reduce_axes_compute(x, axes, True, _max, lambda i: x[tuple(i)], "hardmax_max", tag="reduce")
    first = first_index_of(x, m, axes, False, "hardmax_index")
    strides = {a: int(np.prod([shape[b] for b in axes if b > a])) for a in axes}

    def body(*i: Expr) -> Expr:
        key = const(0, "int64")
        for a in axes:
            key = key + i[a].astype("int64") * const(strides[a], "int64")
        hit = first[tuple(reduced_index(i, rank, axes, True))] == key
        return tirx.Select(hit, const(1, x.dtype), const(0, x.dtype))

    return [elemwise_stage(shape, body, "hardmax")]
