"""Elementwise operators: arithmetic, activations, comparisons, logic, casts.

Every operator here is ``Pattern.ELEMWISE``: output element ``i`` reads element ``i`` of each
input under numpy broadcasting, so the compiler may fuse any chain of them into the epilogue of
a convolution or matmul, or into one loop nest of their own.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from onnx import helper
import tvm
from tvm import te, tirx

from . import fastmath
from .common import broadcast_index, broadcast_shape, const
from .registry import Attrs, Pattern, register, shape_of

Expr = tvm.ir.expr.Expr


def elementwise(name: str, fn: Callable[..., Expr], inputs: Sequence[te.Tensor]) -> te.Tensor:
    """``fn`` applied elementwise over broadcast ``inputs`` as one te.compute named ``name``."""
    shape = broadcast_shape(*[shape_of(t) for t in inputs])

    def body(*idx: Expr) -> Expr:
        return fn(*[t[tuple(broadcast_index(t, idx))] for t in inputs])

    return te.compute(shape, body, name=name, tag="elemwise")


def dtype_of(x: Expr) -> str:
    """dtype of a TIR expression (in TVM 0.27 only tensor loads carry ``.dtype``; others ``.ty``)."""
    dt = getattr(x, "dtype", None)
    return str(dt) if dt is not None else str(x.ty.dtype)


def _float(x: Expr, v: float) -> Expr:
    return const(v, dtype_of(x))


def _unary(op_type: str, fn: Callable[[Expr, Attrs], Expr]) -> None:
    @register(op_type, Pattern.ELEMWISE, "elemwise")
    def compute(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
        return [elementwise(op_type.lower(), lambda x: fn(x, attrs), ins[:1])]


def _binary(op_type: str, fn: Callable[[Expr, Expr], Expr], out_bool: bool = False) -> None:
    @register(op_type, Pattern.ELEMWISE, "elemwise")
    def compute(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
        a, b = ins[0], ins[1]
        if a.dtype != b.dtype:
            raise attrs.fail(f"inputs A ({a.dtype}) and B ({b.dtype}) must have the same dtype")
        return [elementwise(op_type.lower(), fn, [a, b])]


def _is_float(x: Expr) -> bool:
    return "float" in dtype_of(x)


def _div(a: Expr, b: Expr) -> Expr:
    return a / b if _is_float(a) else tirx.truncdiv(a, b)


def _pow(a: Expr, b: Expr) -> Expr:
    if _is_float(a):
        return te.power(a, b.astype(a.dtype))
    return te.power(a.astype("float64"), b.astype("float64")).astype(a.dtype)


def _sigmoid(x: Expr) -> Expr:
    one = _float(x, 1.0)
    return one / (one + fastmath.exp(-x))


def _softplus(x: Expr) -> Expr:
    # log(1 + exp(x)) computed without overflow: max(x, 0) + log1p(exp(-|x|))
    zero = _float(x, 0.0)
    return te.max(x, zero) + tirx.log1p(fastmath.exp(-te.abs(x)))


_binary("Add", lambda a, b: a + b)
_binary("Sub", lambda a, b: a - b)
_binary("Mul", lambda a, b: a * b)
_binary("Div", _div)
_binary("Equal", lambda a, b: a == b)
_binary("Less", lambda a, b: a < b)
_binary("LessOrEqual", lambda a, b: a <= b)
_binary("Greater", lambda a, b: a > b)
_binary("GreaterOrEqual", lambda a, b: a >= b)
_binary("And", tirx.And)
_binary("Or", tirx.Or)
_binary("Xor", lambda a, b: tirx.Or(tirx.And(a, tirx.Not(b)), tirx.And(tirx.Not(a), b)))



@register("Pow", Pattern.ELEMWISE, "elemwise")
def _pow_op(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    return [elementwise("pow", _pow, ins[:2])]


#: opset from which Mod accepts floats with fmod=0
_FLOAT_FLOORMOD_SINCE = 28


def _float_floormod(a: Expr, b: Expr) -> Expr:
    """Floor-mod of floats like ``numpy.mod``: C fmod, moved to the divisor's sign; zero takes b's sign."""
    r = tirx.truncmod(a, b)  # on floats: LLVM frem / C fmod (exact), unlike a - b * trunc(a / b)
    zero = _float(a, 0.0)
    signs_differ = tirx.Or(tirx.And(r < zero, b > zero), tirx.And(r > zero, b < zero))
    wrapped = tirx.Select(signs_differ, r + b, r)
    return tirx.Select(r == zero, tirx.copysign(zero, b), wrapped)


@register("Mod", Pattern.ELEMWISE, "elemwise")
def _mod(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Mod: fmod=1 truncates (C fmod), fmod=0 floors (sign of the divisor, floats from opset 28)."""
    fmod = attrs.get("fmod", 0)
    if _is_float(ins[0]) and not fmod and attrs.opset < _FLOAT_FLOORMOD_SINCE:
        raise attrs.fail(f"Mod on floats requires fmod=1 before opset {_FLOAT_FLOORMOD_SINCE} (ONNX spec)")

    def fn(a: Expr, b: Expr) -> Expr:
        if _is_float(a):
            return tirx.truncmod(a, b) if fmod else _float_floormod(a, b)
        return tirx.truncmod(a, b) if fmod else tirx.floormod(a, b)

    return [elementwise("mod", fn, ins[:2])]


_unary("Neg", lambda x, a: -x)
_unary("Abs", lambda x, a: te.abs(x))
_unary("Sqrt", lambda x, a: te.sqrt(x))
_unary("Exp", lambda x, a: fastmath.exp(x))
_unary("Log", lambda x, a: te.log(x))
_unary("Reciprocal", lambda x, a: _float(x, 1.0) / x)
_unary("Floor", lambda x, a: te.floor(x))
_unary("Ceil", lambda x, a: te.ceil(x))
_unary("Round", lambda x, a: te.nearbyint(x))
_unary("Sign", lambda x, a: tirx.Select(x > 0, _float(x, 1), tirx.Select(x < 0, _float(x, -1), _float(x, 0))))
_unary("Sin", lambda x, a: te.sin(x))
_unary("Cos", lambda x, a: te.cos(x))
_unary("Tanh", lambda x, a: fastmath.tanh(x))
_unary("Erf", lambda x, a: fastmath.erf(x))
_unary("Not", lambda x, a: tirx.Not(x))
_unary("IsNaN", lambda x, a: te.isnan(x))
_unary("Relu", lambda x, a: te.max(x, _float(x, 0)))
_unary("Sigmoid", lambda x, a: _sigmoid(x))
_unary("Softplus", lambda x, a: _softplus(x))
_unary("Softsign", lambda x, a: x / (_float(x, 1.0) + te.abs(x)))
_unary("LeakyRelu", lambda x, a: tirx.Select(x < 0, x * _float(x, a.get("alpha", 0.01)), x))
_unary("Elu", lambda x, a: tirx.Select(x < 0, _float(x, a.get("alpha", 1.0)) * (fastmath.exp(x) - _float(x, 1)), x))
_unary("Celu", lambda x, a: te.max(x, _float(x, 0)) + te.min(
    _float(x, 0), _float(x, a.get("alpha", 1.0)) * (fastmath.exp(x / _float(x, a.get("alpha", 1.0))) - _float(x, 1))))
_unary("ThresholdedRelu", lambda x, a: tirx.Select(x > _float(x, a.get("alpha", 1.0)), x, _float(x, 0)))
_unary("Selu", lambda x, a: _float(x, a.get("gamma", 1.0507009873554805)) * tirx.Select(
    x <= 0, _float(x, a.get("alpha", 1.6732632423543772)) * (fastmath.exp(x) - _float(x, 1)), x))
_unary("HardSigmoid", lambda x, a: te.max(_float(x, 0), te.min(
    _float(x, 1), x * _float(x, a.get("alpha", 0.2)) + _float(x, a.get("beta", 0.5)))))
_unary("HardSwish", lambda x, a: x * te.max(_float(x, 0), te.min(_float(x, 1), x / _float(x, 6) + _float(x, 0.5))))
_unary("Mish", lambda x, a: x * fastmath.tanh(_softplus(x)))


def _gelu(x: Expr, a: Attrs) -> Expr:
    if a.get("approximate", "none") == "tanh":
        inner = _float(x, math.sqrt(2 / math.pi)) * (x + _float(x, 0.044715) * x * x * x)
        return _float(x, 0.5) * x * (_float(x, 1) + fastmath.tanh(inner))
    return _float(x, 0.5) * x * (_float(x, 1) + fastmath.erf(x * _float(x, 1 / math.sqrt(2))))


_unary("Gelu", _gelu)


@register("IsInf", Pattern.ELEMWISE, "elemwise")
def _isinf(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    pos, neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)

    def fn(x: Expr) -> Expr:
        inf = te.isinf(x)
        if pos and neg:
            return inf
        return tirx.And(inf, x > 0) if pos else tirx.And(inf, x < 0) if neg else tirx.const(False, "bool")

    return [elementwise("isinf", fn, ins[:1])]


@register("PRelu", Pattern.ELEMWISE, "elemwise")
def _prelu(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    return [elementwise("prelu", lambda x, s: tirx.Select(x < 0, x * s, x), ins[:2])]


@register("Clip", Pattern.ELEMWISE, "elemwise")
def _clip(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    x = ins[0]
    if attrs.opset < 11:
        lo, hi = attrs.get("min", -3.4028234663852886e38), attrs.get("max", 3.4028234663852886e38)
        return [elementwise("clip", lambda v: te.min(te.max(v, _float(v, lo)), _float(v, hi)), [x])]
    lo_t = ins[1] if len(ins) > 1 else None
    hi_t = ins[2] if len(ins) > 2 else None
    bounds = [t for t in (lo_t, hi_t) if t is not None]

    def fn(v: Expr, *b: Expr) -> Expr:
        it = iter(b)
        if lo_t is not None:
            v = te.max(v, next(it))
        if hi_t is not None:
            v = te.min(v, next(it))
        return v

    return [elementwise("clip", fn, [x, *bounds])]


def _variadic(op_type: str, combine: Callable[[Expr, Expr], Expr], finish: Callable[[Expr, int], Expr]) -> None:
    @register(op_type, Pattern.ELEMWISE, "elemwise")
    def compute(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
        live = [t for t in ins if t is not None]

        def fn(*xs: Expr) -> Expr:
            acc = xs[0]
            for x in xs[1:]:
                acc = combine(acc, x)
            return finish(acc, len(xs))

        return [elementwise(op_type.lower(), fn, live)]


_variadic("Sum", lambda a, b: a + b, lambda acc, n: acc)
_variadic("Mean", lambda a, b: a + b, lambda acc, n: acc / _float(acc, n))
_variadic("Max", te.max, lambda acc, n: acc)
_variadic("Min", te.min, lambda acc, n: acc)


@register("Where", Pattern.ELEMWISE, "elemwise")
def _where(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    return [elementwise("where", lambda c, a, b: tirx.Select(c, a, b), ins[:3])]


def _cast_expr(x: Expr, dtype: str) -> Expr:
    if dtype == "bool":
        if dtype_of(x) == "bool":  # (x != false) on i1 would emit an invalid LLVM fcmp
            return x
        return x != tirx.const(0, dtype_of(x))
    return x.astype(dtype)


@register("Cast", Pattern.ELEMWISE, "elemwise")
def _cast(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    to = attrs.get("to")
    try:
        dtype = str(np.dtype(helper.tensor_dtype_to_np_dtype(to)))
    except Exception as exc:
        raise attrs.fail(f"attribute 'to'={to} is not a supported tensor type") from exc
    if dtype not in ("float32", "float64", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"):
        raise attrs.fail(f"Cast to {dtype} is not supported")
    return [elementwise("cast", lambda x: _cast_expr(x, dtype), ins[:1])]


@register("CastLike", Pattern.ELEMWISE, "elemwise")
def _castlike(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    dtype = str(ins[1].dtype)
    return [elementwise("cast", lambda x: _cast_expr(x, dtype), ins[:1])]


@register("BatchNormalization", Pattern.ELEMWISE, "elemwise")
def _batchnorm_inference(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """Inference form: (x - mean) / sqrt(var + eps) * scale + bias, per channel (axis 1)."""
    if attrs.get("training_mode", 0):
        raise attrs.fail("training_mode=1 is only supported by the training compiler")
    x, scale, bias, mean, var = ins[:5]
    eps = attrs.get("epsilon", 1e-5)
    rank = len(x.shape)

    def body(*idx: Expr) -> Expr:
        c = idx[1]
        inv = scale[c] / te.sqrt(var[c] + _float(var[c], eps))
        return (x[idx] - mean[c]) * inv + bias[c]

    if rank < 2:
        raise attrs.fail(f"input X must have rank >= 2, got shape {shape_of(x)}")
    return [te.compute(shape_of(x), body, name="batchnorm", tag="elemwise")]


# ---------------------------------------------------------------------- adjoints (reverse-mode rules)
# Each rule emits graph nodes of registered operators (see portable.autodiff); ``g`` is the output
# gradient, gradients of broadcast inputs are summed back to the input's shape.
from ..autodiff.registry import adjoint  # noqa: E402


def _x(node):  # type: ignore[no-untyped-def]
    return node.inputs[0]


@adjoint("Add")
def _add_adj(b, node, g):  # type: ignore[no-untyped-def]
    return [b.unbroadcast(g[0], node.inputs[0]), b.unbroadcast(g[0], node.inputs[1])]


@adjoint("Sub")
def _sub_adj(b, node, g):  # type: ignore[no-untyped-def]
    gb = b.unbroadcast(b.neg(g[0]), node.inputs[1]) if b.needs(1) else None
    return [b.unbroadcast(g[0], node.inputs[0]), gb]


@adjoint("Mul")
def _mul_adj(b, node, g):  # type: ignore[no-untyped-def]
    x, y = node.inputs[:2]
    gx = b.unbroadcast(b.mul(g[0], y), x) if b.needs(0) else None
    gy = b.unbroadcast(b.mul(g[0], x), y) if b.needs(1) else None
    return [gx, gy]


@adjoint("Div")
def _div_adj(b, node, g):  # type: ignore[no-untyped-def]
    x, y = node.inputs[:2]
    gx = b.unbroadcast(b.op("Div", g[0], y), x) if b.needs(0) else None
    gy = b.unbroadcast(b.neg(b.op("Div", b.mul(g[0], node.outputs[0]), y)), y) if b.needs(1) else None
    return [gx, gy]


@adjoint("Pow")
def _pow_adj(b, node, g):  # type: ignore[no-untyped-def]
    x, y = node.inputs[:2]
    gx = gy = None
    if b.needs(0):
        ym1 = b.op("Sub", y, b.scalar(1.0, y))
        gx = b.unbroadcast(b.mul(g[0], b.mul(y, b.op("Pow", x, ym1))), x)
    if b.needs(1):
        gy = b.unbroadcast(b.mul(g[0], b.mul(node.outputs[0], b.op("Log", x))), y)
    return [gx, gy]


def _unary_adj(op_type: str, rule) -> None:  # type: ignore[no-untyped-def]
    @adjoint(op_type)
    def fn(b, node, g):  # type: ignore[no-untyped-def]
        return [rule(b, node, g[0], _x(node), node.outputs[0])]


def _where_neg(b, x, if_neg: str, otherwise: str, cmp: str = "lt", thr: float = 0.0):  # type: ignore[no-untyped-def]
    return b.op("Select", x, b.scalar(thr, x), if_neg, otherwise, cmp=cmp)


_unary_adj("Neg", lambda b, n, g, x, y: b.neg(g))
_unary_adj("Abs", lambda b, n, g, x, y: b.mul(g, b.op("Sign", x)))
_unary_adj("Sqrt", lambda b, n, g, x, y: b.op("Div", b.scale(g, 0.5), y))
_unary_adj("Exp", lambda b, n, g, x, y: b.mul(g, y))
_unary_adj("Log", lambda b, n, g, x, y: b.op("Div", g, x))
_unary_adj("Reciprocal", lambda b, n, g, x, y: b.neg(b.mul(g, b.mul(y, y))))
_unary_adj("Sin", lambda b, n, g, x, y: b.mul(g, b.op("Cos", x)))
_unary_adj("Cos", lambda b, n, g, x, y: b.neg(b.mul(g, b.op("Sin", x))))
_unary_adj("Tanh", lambda b, n, g, x, y: b.mul(g, b.op("Sub", b.scalar(1.0, y), b.mul(y, y))))
_unary_adj("Sigmoid", lambda b, n, g, x, y: b.mul(g, b.mul(y, b.op("Sub", b.scalar(1.0, y), y))))
_unary_adj("Relu", lambda b, n, g, x, y: b.op("Select", x, b.scalar(0.0, x), g, b.scalar(0.0, g), cmp="gt"))
_unary_adj("Softplus", lambda b, n, g, x, y: b.mul(g, b.op("Sigmoid", x)))
_unary_adj("Softsign", lambda b, n, g, x, y: b.op("Div", g, b.op("Pow", b.op("Add", b.scalar(1.0, x), b.op(
    "Abs", x)), b.scalar(2.0, x))))
_unary_adj("LeakyRelu", lambda b, n, g, x, y: _where_neg(b, x, b.scale(g, n.attrs.get("alpha", 0.01)), g))
_unary_adj("Elu", lambda b, n, g, x, y: _where_neg(
    b, x, b.mul(g, b.op("Add", y, b.scalar(n.attrs.get("alpha", 1.0), y))), g))
_unary_adj("Selu", lambda b, n, g, x, y: _where_neg(
    b, x, b.mul(b.scale(g, n.attrs.get("gamma", 1.0507009873554805) * n.attrs.get("alpha", 1.6732632423543772)),
                b.op("Exp", x)), b.scale(g, n.attrs.get("gamma", 1.0507009873554805)), cmp="le"))
_unary_adj("Erf", lambda b, n, g, x, y: b.mul(b.scale(g, 2.0 / math.sqrt(math.pi)),
                                              b.op("Exp", b.neg(b.mul(x, x)))))
_unary_adj("ThresholdedRelu", lambda b, n, g, x, y: _where_neg(
    b, x, g, b.scalar(0.0, g), cmp="gt", thr=n.attrs.get("alpha", 1.0)))


def _hard_sigmoid_adj(b, n, g, x, y):  # type: ignore[no-untyped-def]
    alpha, beta = n.attrs.get("alpha", 0.2), n.attrs.get("beta", 0.5)
    lin = b.op("Add", b.scale(x, alpha), b.scalar(beta, x))
    inner = b.op("Select", lin, b.scalar(1.0, x), b.scalar(0.0, g), b.scale(g, alpha), cmp="ge")
    return b.op("Select", lin, b.scalar(0.0, x), b.scalar(0.0, g), inner, cmp="le")


_unary_adj("HardSigmoid", _hard_sigmoid_adj)


def _gelu_adj(b, n, g, x, y):  # type: ignore[no-untyped-def]
    if n.attrs.get("approximate", "none") == "tanh":
        c = math.sqrt(2 / math.pi)
        x2 = b.mul(x, x)
        inner = b.scale(b.op("Add", x, b.scale(b.mul(x2, x), 0.044715)), c)
        t = b.op("Tanh", inner)
        one = b.scalar(1.0, x)
        dinner = b.scale(b.op("Add", one, b.scale(x2, 3 * 0.044715)), c)
        d = b.op("Add", b.scale(b.op("Add", one, t), 0.5),
                 b.mul(b.scale(x, 0.5), b.mul(b.op("Sub", one, b.mul(t, t)), dinner)))
        return b.mul(g, d)
    cdf = b.scale(b.op("Add", b.scalar(1.0, x), b.op("Erf", b.scale(x, 1 / math.sqrt(2)))), 0.5)
    pdf = b.scale(b.op("Exp", b.scale(b.mul(x, x), -0.5)), 1 / math.sqrt(2 * math.pi))
    return b.mul(g, b.op("Add", cdf, b.mul(x, pdf)))


_unary_adj("Gelu", _gelu_adj)


@adjoint("Clip", nondiff=(1, 2))
def _clip_adj(b, node, g):  # type: ignore[no-untyped-def]
    x, gx = node.inputs[0], g[0]
    zero = b.scalar(0.0, gx)
    if node.opset < 11:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        lo = b.scalar(lo, x) if lo is not None else None
        hi = b.scalar(hi, x) if hi is not None else None
    else:
        lo = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] else None
        hi = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if lo is not None:
        gx = b.op("Select", x, lo, zero, gx, cmp="lt")
    if hi is not None:
        gx = b.op("Select", x, hi, zero, gx, cmp="gt")
    return [gx]


@adjoint("PRelu")
def _prelu_adj(b, node, g):  # type: ignore[no-untyped-def]
    x, s = node.inputs[:2]
    zero = b.scalar(0.0, x)
    gx = b.op("Select", x, zero, b.mul(g[0], s), g[0], cmp="lt") if b.needs(0) else None
    gs = b.unbroadcast(b.op("Select", x, zero, b.mul(g[0], x), zero, cmp="lt"), s) if b.needs(1) else None
    return [gx, gs]


@adjoint(["Sum", "Mean"])
def _sum_adj(b, node, g):  # type: ignore[no-untyped-def]
    live = [i for i in node.inputs if i]
    gg = g[0] if node.op == "Sum" else b.scale(g[0], 1.0 / len(live))
    return [b.unbroadcast(gg, i) if i else None for i in node.inputs]


@adjoint(["Max", "Min"])
def _minmax_adj(b, node, g):  # type: ignore[no-untyped-def]
    y, zero = node.outputs[0], b.scalar(0.0, g[0])
    return [b.unbroadcast(b.op("Select", i, y, g[0], zero, cmp="eq"), i) if i else None for i in node.inputs]


@adjoint("Where", nondiff=(0,))
def _where_adj(b, node, g):  # type: ignore[no-untyped-def]
    c, x, y = node.inputs[:3]
    zero = b.scalar(0.0, g[0])
    gx = b.unbroadcast(b.op("Where", c, g[0], zero), x) if b.needs(1) else None
    gy = b.unbroadcast(b.op("Where", c, zero, g[0]), y) if b.needs(2) else None
    return [None, gx, gy]


@adjoint(["Cast", "CastLike"], nondiff=(1,))
def _cast_adj(b, node, g):  # type: ignore[no-untyped-def]
    x = node.inputs[0]
    if "float" not in b.dtype(x) or "float" not in b.dtype(g[0]):
        return [None]
    if b.dtype(x) == b.dtype(g[0]):
        return [g[0]]
    return [b.op("CastLike", g[0], x)]


@adjoint(["Floor", "Ceil", "Round", "Sign"])
def _zero_adj(b, node, g):  # type: ignore[no-untyped-def]
    return [None]


# ---------------------------------------------------------------------- adjoints: Celu, HardSwish, Mish, Mod,
# and the piecewise-constant (boolean-valued) operators


_unary_adj("Celu", lambda b, n, g, x, y: _where_neg(
    b, x, b.mul(g, b.op("Exp", b.scale(x, 1.0 / n.attrs.get("alpha", 1.0)))), g))


def _hard_swish_adj(b, n, g, x, y):  # type: ignore[no-untyped-def]
    """d/dx x*clamp(x/6 + 1/2, 0, 1): 0 below -3, x/3 + 1/2 inside, 1 above 3."""
    inner = b.mul(g, b.op("Add", b.scale(x, 1.0 / 3.0), b.scalar(0.5, x)))
    upper = b.op("Select", x, b.scalar(3.0, x), g, inner, cmp="gt")
    return b.op("Select", x, b.scalar(-3.0, x), b.scalar(0.0, g), upper, cmp="lt")


_unary_adj("HardSwish", _hard_swish_adj)


def _mish_adj(b, n, g, x, y):  # type: ignore[no-untyped-def]
    """d/dx x*tanh(softplus(x)) = t + x * (1 - t^2) * sigmoid(x), t = tanh(softplus(x))."""
    t = b.op("Tanh", b.op("Softplus", x))
    dt = b.mul(b.op("Sub", b.scalar(1.0, x), b.mul(t, t)), b.op("Sigmoid", x))
    return b.mul(g, b.op("Add", t, b.mul(x, dt)))


_unary_adj("Mish", _mish_adj)


@adjoint("Mod")
def _mod_adj(b, node, g):  # type: ignore[no-untyped-def]
    """a - b*q with q = floor(a/b) (fmod=0) or trunc(a/b) (fmod=1): da = g, db = -g*q (integers: none)."""
    a, d = node.inputs[:2]
    if "float" not in b.dtype(a):
        return [None, None]
    ga = b.unbroadcast(g[0], a) if b.needs(0) else None
    gd = None
    if b.needs(1):
        q = b.op("Div", a, d)
        if node.attrs.get("fmod", 0):  # trunc(q) = q - fmod(q, 1)
            q = b.op("Sub", q, b.op("Mod", q, b.scalar(1.0, q), fmod=1))
        else:
            q = b.op("Floor", q)
        gd = b.unbroadcast(b.neg(b.mul(g[0], q)), d)
    return [ga, gd]


@adjoint(["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor"], nondiff=(0, 1))
def _boolean_binary_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Comparisons and logic are piecewise constant: no gradient reaches their inputs."""
    return [None, None]


@adjoint(["Not", "IsInf", "IsNaN"], nondiff=(0,))
def _boolean_unary_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Boolean-valued tests are piecewise constant: no gradient reaches their input."""
    return [None]
