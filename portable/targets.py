"""Targets users name (``host``, ``x86-avx2``, ``aarch64``, ``cuda-sm80``...) mapped to TVM targets.

A plain ``{"kind": "llvm"}`` target makes LLVM emit generic x86-64 (SSE only) code, so ``host``
reads the CPU model through TVM's device query and falls back to /proc/cpuinfo flags; every x86
target names an ``mcpu`` so AVX2/AVX-512 instructions are really used.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import PortableError


@dataclass(frozen=True)
class TargetInfo:
    """A compilation target: the TVM target plus facts schedules need."""

    name: str
    family: str  # "x86" | "arm" | "cuda"
    tvm_target: dict[str, Any] = field(hash=False)
    vector_bits: int = 256  # widest SIMD register in bits
    num_cores: int = 1
    cross_compiler: str | None = None  # gcc driver used to link a shared library for the device
    host_runnable: bool = True

    @property
    def vector_lanes_f32(self) -> int:
        """float32 lanes of one SIMD register."""
        return self.vector_bits // 32

    @property
    def key(self) -> str:
        """Stable identity of the target for caches and tuning logs."""
        t = self.tvm_target
        parts = [t.get("kind", "?"), t.get("mcpu", t.get("arch", "")), t.get("mtriple", "")]
        return "/".join(str(p) for p in parts if p) + f"/c{self.num_cores}"

    def tvm(self) -> Any:
        """The ``tvm.target.Target`` object."""
        import tvm

        return tvm.target.Target(dict(self.tvm_target))


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def host_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def detect_host() -> TargetInfo:
    """This machine's CPU as a target, with its real SIMD width."""
    import platform

    import tvm

    cores = host_cores()
    machine = platform.machine()
    if machine in ("aarch64", "arm64"):
        return TargetInfo("host", "arm", {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"],
                                          "num-cores": cores}, 128, cores)
    mcpu = None
    try:
        mcpu = str(tvm.target.Target.from_device(tvm.cpu()).attrs.get("mcpu", "")) or None
    except Exception:
        mcpu = None
    flags = _cpu_flags()
    if "avx512f" in flags:
        bits, fallback = 512, "skylake-avx512"
    elif "avx2" in flags:
        bits, fallback = 256, "haswell"
    else:
        bits, fallback = 128, "x86-64"
    if not mcpu or mcpu in ("generic", "x86-64"):
        mcpu = fallback
    return TargetInfo("host", "x86", {"kind": "llvm", "mcpu": mcpu, "num-cores": cores}, bits, cores)


def _named() -> dict[str, TargetInfo]:
    cores = host_cores()
    return {
        "x86": TargetInfo("x86", "x86", {"kind": "llvm", "mcpu": "haswell", "num-cores": cores}, 256, cores),
        "x86-avx2": TargetInfo("x86-avx2", "x86", {"kind": "llvm", "mcpu": "znver3", "num-cores": cores}, 256, cores),
        "x86-avx512": TargetInfo("x86-avx512", "x86", {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": cores},
                                 512, cores),
        "aarch64": TargetInfo("aarch64", "arm", {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                                                 "mattr": ["+neon"], "num-cores": 4}, 128, 4,
                              "aarch64-linux-gnu-g++", host_runnable=False),
        "armv7": TargetInfo("armv7", "arm", {"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mcpu": "cortex-a7",
                                             "mattr": ["+neon"], "num-cores": 4}, 128, 4,
                            "arm-linux-gnueabihf-g++", host_runnable=False),
        "cuda-sm80": TargetInfo("cuda-sm80", "cuda", {"kind": "cuda", "arch": "sm_80"}, 0, 1, host_runnable=False),
        "cuda-sm90": TargetInfo("cuda-sm90", "cuda", {"kind": "cuda", "arch": "sm_90"}, 0, 1, host_runnable=False),
    }


def resolve_target(target: str | TargetInfo | None) -> TargetInfo:
    """Turn a user's target name into a TargetInfo (``None`` and ``"host"`` mean this machine)."""
    if isinstance(target, TargetInfo):
        return target
    if target in (None, "host", "native"):
        return detect_host()
    named = _named()
    if target in named:
        return named[target]
    raise PortableError(f"unknown target {target!r}; choose one of: host, {', '.join(named)}")


def configure_threads(num: int | None = None) -> None:
    """Make TVM's thread pool use every core (its default is half of them) unless set by the user."""
    os.environ.setdefault("TVM_NUM_THREADS", str(num or host_cores()))
