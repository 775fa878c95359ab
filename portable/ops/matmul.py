"""Matrix products: MatMul (batched, broadcast) and Gemm.

The product itself is one reduction block tagged ``anchor`` named ``matmul``; Gemm's scaling and
bias are a separate elementwise stage so the schedule treats them like any fused epilogue.
"""

from __future__ import annotations

from typing import Sequence

from tvm import te

from .common import broadcast_index, broadcast_shape, const
from .registry import Attrs, Pattern, register, shape_of


def batch_matmul(a: te.Tensor, b: te.Tensor, trans_a: bool = False, trans_b: bool = False,
                 name: str = "matmul") -> te.Tensor:
    """``a @ b`` over the last two axes with numpy broadcasting of the leading (batch) axes."""
    sa, sb = shape_of(a), shape_of(b)
    m, ka = (sa[-1], sa[-2]) if trans_a else (sa[-2], sa[-1])
    kb, n = (sb[-1], sb[-2]) if trans_b else (sb[-2], sb[-1])
    if ka != kb:
        raise ValueError(f"inner dimensions differ: {sa} x {sb}")
    batch = broadcast_shape(sa[:-2], sb[:-2])
    k = te.reduce_axis((0, ka), name="k")
    nb = len(batch)

    def body(*idx):  # type: ignore[no-untyped-def]
        bidx, i, j = idx[:nb], idx[nb], idx[nb + 1]
        ai = broadcast_index(te.placeholder(sa[:-2]), bidx) if len(sa) > 2 else []
        bi = broadcast_index(te.placeholder(sb[:-2]), bidx) if len(sb) > 2 else []
        av = a[(*ai, k, i)] if trans_a else a[(*ai, i, k)]
        bv = b[(*bi, j, k)] if trans_b else b[(*bi, k, j)]
        return te.sum(av * bv, axis=k)

    return te.compute((*batch, m, n), body, name=name, tag="anchor")


@register("MatMul", Pattern.ANCHOR, "matmul")
def matmul(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX MatMul: numpy.matmul semantics, including 1-D operands."""
    a, b = ins[0], ins[1]
    if a.dtype != b.dtype:
        raise attrs.fail(f"inputs A ({a.dtype}) and B ({b.dtype}) must have the same dtype")
    sa, sb = shape_of(a), shape_of(b)
    if len(sa) == 0 or len(sb) == 0:
        raise attrs.fail("MatMul inputs must have rank >= 1")
    if len(sa) == 1:
        a = te.compute((1, sa[0]), lambda i, k: a[k], name="vec_a", tag="injective")
    if len(sb) == 1:
        b = te.compute((sb[0], 1), lambda k, j: b[k], name="vec_b", tag="injective")
    if shape_of(a)[-1] != shape_of(b)[-2]:
        raise attrs.fail(f"inner dimensions of A {sa} and B {sb} differ")
    out = batch_matmul(a, b)
    if len(sa) == 1 or len(sb) == 1:
        full = shape_of(out)
        keep = full[:-2] + ((full[-2],) if len(sa) > 1 else ()) + ((full[-1],) if len(sb) > 1 else ())

        def squeeze(*idx):  # type: ignore[no-untyped-def]
            nb = len(full) - 2
            i = idx[nb] if len(sa) > 1 else 0
            j = idx[-1] if len(sb) > 1 else 0
            return out[(*idx[:nb], i, j)]

        out = te.compute(keep, squeeze, name="matmul_squeeze", tag="injective")
    return [out]


@register("Gemm", Pattern.ANCHOR, "matmul")
def gemm(ins: Sequence[te.Tensor], attrs: Attrs) -> list[te.Tensor]:
    """ONNX Gemm: alpha * A' @ B' + beta * C with C broadcast to (M, N)."""
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise attrs.fail(f"A and B must be 2-D, got {shape_of(a)} and {shape_of(b)}")
    ta, tb = bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0))
    try:
        prod = batch_matmul(a, b, ta, tb)
    except ValueError as exc:
        raise attrs.fail(f"A {shape_of(a)} (transA={int(ta)}) and B {shape_of(b)} (transB={int(tb)}): {exc}") from exc
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if c is None and alpha == 1.0:
        return [prod]
    dtype = prod.dtype

    def body(i, j):  # type: ignore[no-untyped-def]
        v = prod[i, j] if alpha == 1.0 else prod[i, j] * const(alpha, dtype)
        if c is not None:
            cv = c[tuple(broadcast_index(c, (i, j)))]
            v = v + (cv if beta == 1.0 else cv * const(beta, dtype))
        return v

    return [te.compute(shape_of(prod), body, name="gemm_bias", tag="elemwise")]


# ---------------------------------------------------------------------- adjoints (reverse-mode rules)
from ..autodiff.registry import adjoint  # noqa: E402


@adjoint("MatMul")
def _matmul_adj(b, node, g):  # type: ignore[no-untyped-def]
    """dA = dY @ B^T and dB = A^T @ dY, with 1-D operands promoted and broadcast batches summed."""
    x, y = node.inputs[:2]
    sx, sy = b.shape(x), b.shape(y)
    x2 = b.reshape(x, (1, sx[0])) if len(sx) == 1 else x
    y2 = b.reshape(y, (sy[0], 1)) if len(sy) == 1 else y
    gshape = b.shape(g[0])
    if len(sx) == 1:
        gshape = gshape[:-1] + (1,) + gshape[-1:] if len(sy) > 1 else (1, 1)
    if len(sy) == 1:
        gshape = gshape + (1,) if len(sx) > 1 else (1, 1)
    g2 = b.reshape(g[0], gshape)
    gx = gy = None
    if b.needs(0):
        gx = b.reshape(b.unbroadcast(b.op("MatMulT", g2, y2, transB=1), x2), sx)
    if b.needs(1):
        gy = b.reshape(b.unbroadcast(b.op("MatMulT", x2, g2, transA=1), y2), sy)
    return [gx, gy]


@adjoint("Gemm")
def _gemm_adj(b, node, g):  # type: ignore[no-untyped-def]
    """Gradients of alpha * A' @ B' + beta * C for every transA/transB combination."""
    a, bb = node.inputs[:2]
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    gy = g[0]
    ga = gb = gc = None
    if b.needs(0):
        ga = (b.op("MatMulT", gy, bb, transA=0, transB=1 - tb) if not ta
              else b.op("MatMulT", bb, gy, transA=tb, transB=1))
        ga = b.scale(ga, alpha)
    if b.needs(1):
        gb = (b.op("MatMulT", a, gy, transA=1 - ta, transB=0) if not tb
              else b.op("MatMulT", gy, a, transA=1, transB=ta))
        gb = b.scale(gb, alpha)
    if c is not None and b.needs(2):
        gc = b.unbroadcast(b.scale(gy, beta), c)
    return [ga, gb, gc]
