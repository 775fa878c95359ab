"""Vectorisable float32 exp, tanh and erf.

LLVM lowers ``exp``/``tanh``/``erf`` on a SIMD vector to one libm call per lane: 7-17 ns an element
here, against 0.4 ns for these branch-free polynomial forms (measured on 1M elements, AVX-512).
onnxruntime's MLAS uses the same kind of approximations. Accuracy is a few float32 ulp:
exp is Cephes' expf (range reduction by ln 2, degree-5 polynomial, 2^n by exponent bits),
tanh and erf are Eigen's rational approximations. Other dtypes use the exact intrinsics.
"""

from __future__ import annotations

import tvm
from tvm import te, tirx

Expr = tvm.ir.expr.Expr


def _dtype(x: Expr) -> str:
    return str(x.dtype) if hasattr(x, "dtype") else str(x.ty.dtype)


def _c(v: float) -> Expr:
    return tirx.const(v, "float32")


def _poly(x: Expr, coeffs: list[float]) -> Expr:
    acc = _c(coeffs[0])
    for c in coeffs[1:]:
        acc = acc * x + _c(c)
    return acc


def _keep_nan(x: Expr, y: Expr) -> Expr:
    """``y``, but NaN where ``x`` is NaN (the clamps below would otherwise swallow it)."""
    return tirx.Select(te.isnan(x), x, y)


def exp(x: Expr) -> Expr:
    """e**x (inf above float32's range, 0 below its normal range)."""
    if _dtype(x) != "float32":
        return te.exp(x)
    orig = x
    x = te.min(te.max(x, _c(-103.9)), _c(88.7228))
    n = te.floor(x * _c(1.44269504088896341) + _c(0.5))
    r = x - n * _c(0.693359375) + n * _c(2.12194440e-4)
    p = _poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                  1.6666665459e-1, 5.0000001201e-1])
    y = p * r * r + r + _c(1.0)
    # 2**n as 2**n1 * 2**n2 with both halves normal floats, so results down to the denormals are right
    ni = n.astype("int32")
    n1 = ni >> 1
    n2 = ni - n1
    scale1 = tirx.reinterpret("float32", (n1 + 127) << 23)
    scale2 = tirx.reinterpret("float32", (n2 + 127) << 23)
    value = tirx.Select(orig > _c(88.72283935546875), _c(float("inf")),
                        tirx.Select(orig < _c(-103.9), _c(0.0), y * scale1 * scale2))
    return _keep_nan(orig, value)


def tanh(x: Expr) -> Expr:
    """Hyperbolic tangent."""
    if _dtype(x) != "float32":
        return te.tanh(x)
    xc = te.min(te.max(x, _c(-9.0)), _c(9.0))
    x2 = xc * xc
    p = xc * _poly(x2, [-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                        5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                        4.89352455891786e-03])
    q = _poly(x2, [1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03])
    return _keep_nan(x, tirx.Select(te.abs(x) < _c(0.0004), x, p / q))


def erf(x: Expr) -> Expr:
    """Error function."""
    if _dtype(x) != "float32":
        return te.erf(x)
    xc = te.min(te.max(x, _c(-4.0)), _c(4.0))
    x2 = xc * xc
    p = xc * _poly(x2, [-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                        -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                        -1.60960333262415e-02])
    q = _poly(x2, [-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                   -7.37332916720468e-03, -1.42647390514189e-02])
    return _keep_nan(x, p / q)
