"""Target detection gives real SIMD code, and named targets resolve."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from portable.errors import PortableError
from portable.targets import _cpu_flags, detect_host, resolve_target
from schedules import ScheduleContext, apply_schedule


def _matmul_asm(target) -> str:  # type: ignore[no-untyped-def]
    from portable.ops.matmul import batch_matmul

    a = te.placeholder((64, 64), name="a")
    b = te.placeholder((64, 64), name="b")
    func = te.create_prim_func([a, b, batch_matmul(a, b)])
    scheduled, _ = apply_schedule(func, ScheduleContext("matmul", "matmul", {}, target))
    return tvm.compile(tvm.IRModule({"main": scheduled}), target=target.tvm()).mod.inspect_source("asm")


def test_host_uses_widest_simd() -> None:
    host = detect_host()
    flags = _cpu_flags()
    asm = _matmul_asm(host)
    if "avx512f" in flags:
        assert host.vector_bits == 512 and "zmm" in asm
    elif "avx2" in flags:
        assert host.vector_bits == 256 and "ymm" in asm
    assert "vfmadd" in asm or "avx2" not in flags, "FMA instructions expected on an FMA-capable host"


def test_named_x86_targets_emit_their_isa() -> None:
    assert "ymm" in _matmul_asm(resolve_target("x86-avx2"))
    assert "zmm" in _matmul_asm(resolve_target("x86-avx512"))


def test_unknown_target_is_a_clear_error() -> None:
    with pytest.raises(PortableError, match="unknown target 'x87'"):
        resolve_target("x87")


def test_target_keys_differ() -> None:
    keys = {resolve_target(t).key for t in ("x86-avx2", "x86-avx512", "aarch64")}
    assert len(keys) == 3
    assert np.all([resolve_target("host").num_cores >= 1])


def test_cross_target_compiles_but_refuses_to_run_here() -> None:
    """An aarch64 build produces ARM code; running it on this x86 host is a clear error, not a crash."""
    import platform

    import portable
    from portable.demo import demo_model

    if platform.machine() in ("aarch64", "arm64"):
        pytest.skip("host is ARM")
    exe = portable.compile(demo_model(), target="aarch64", cache=False)
    assert "fmla" in exe.lib.mod.inspect_source("asm") or "fmla" in exe.lib.inspect_source("asm")
    with pytest.raises(PortableError, match="cannot run on this machine"):
        exe.run(np.zeros((1, 3, 64, 64), np.float32))
