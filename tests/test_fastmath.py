"""The vectorisable float32 exp/tanh/erf agree with float64 math to a few float32 ulp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from tvm import te

from portable.ops import fastmath
from portable.targets import detect_host
from schedules import ScheduleContext, apply_schedule


@pytest.mark.parametrize("name,ref,tol", [("exp", np.exp, 2e-7), ("tanh", np.tanh, 5e-7),
                                          ("erf", np.vectorize(math.erf), 5e-7)])
def test_fast_function_accuracy(name: str, ref, tol: float) -> None:  # type: ignore[no-untyped-def]
    x = np.concatenate([np.linspace(-100, 100, 20001), np.linspace(-5, 5, 10001),
                        np.array([1e-5, -1e-6, 0.0, 88.5, -86.0])]).astype(np.float32)
    n = len(x)
    xs = te.placeholder((n,), name="x")
    ys = te.compute((n,), lambda i: getattr(fastmath, name)(xs[i]), name="y")
    func, _ = apply_schedule(te.create_prim_func([xs, ys]), ScheduleContext("elemwise", None, {}, detect_host()))
    out = tvm.runtime.empty((n,), "float32", tvm.cpu())
    tvm.compile(tvm.IRModule({"main": func}), target=detect_host().tvm())["main"](tvm.runtime.tensor(x), out)
    want = ref(x.astype(np.float64))
    got = out.numpy().astype(np.float64)
    want32 = want.astype(np.float32).astype(np.float64)  # float32 overflow -> inf, underflow -> ~0
    finite = np.isfinite(want32) & (np.abs(want32) >= 1e-37)
    rel = np.abs(got - want)[finite] / np.abs(want)[finite]
    assert rel.max() < tol, f"{name}: max relative error {rel.max():.3g} at x={x[finite][rel.argmax()]}"
    assert np.array_equal(got[np.isinf(want32)], want32[np.isinf(want32)]), f"{name}: overflow must give inf"
    tiny = np.abs(want32) < 1e-37
    assert np.all(np.abs(got - want)[tiny] <= 1.2e-38), f"{name}: near-underflow values must be ~exact or 0"


def test_fast_functions_propagate_nan_and_inf() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    xs = te.placeholder((4,), name="x")
    def elementwise(f, k):  # type: ignore[no-untyped-def]
        return te.compute((4,), lambda i: f(xs[i]), name=f"y{k}")

    outs = [elementwise(f, k) for k, f in enumerate((fastmath.exp, fastmath.tanh, fastmath.erf))]
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([xs, *outs])}), target=detect_host().tvm())
    res = [tvm.runtime.empty((4,), "float32", tvm.cpu()) for _ in outs]
    lib["main"](tvm.runtime.tensor(x), *res)
    for r, ref in zip(res, (np.exp, np.tanh, np.vectorize(math.erf))):
        want = ref(x.astype(np.float64)).astype(np.float32)
        np.testing.assert_allclose(r.numpy(), want, rtol=1e-6)
