"""The compiled model: kernels + a static execution plan + constants.

Buffers are allocated once (intermediates share slots planned at compile time), inputs are
checked (names, count, dtypes, shapes) before any kernel runs. A C-contiguous input is read in
place by kernels built for its alignment (64 bytes, or the element for kernels reading graph
inputs); anything else (strided, read-only, not element-aligned) is first copied into an aligned,
contiguous TVM tensor, so no kernel ever reads memory laid out otherwise than it was built for.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import tvm

from ..errors import InputError, PortableError
from ..targets import TargetInfo, configure_threads, resolve_target

FORMAT = "portable-ptb-1"


@dataclass
class Plan:
    """Everything besides the kernels and constants needed to run a model."""

    inputs: list[str]
    outputs: list[str]
    output_names: list[str]
    values: dict[str, dict[str, Any]]
    steps: list[dict[str, Any]]
    slots: dict[str, int]
    target: str
    target_key: str
    kernels: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: str = ""

    def to_json(self) -> str:
        """Serialise."""
        return json.dumps({"format": FORMAT, **asdict(self)}, default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """Deserialise."""
        data = json.loads(text)
        if data.pop("format", None) != FORMAT:
            raise PortableError("not a portable compiled model (unknown format)")
        return cls(**data)


def _dense(arr: np.ndarray) -> np.ndarray:
    """C-contiguous, aligned copy of ``arr`` if it is not already; keeps 0-d arrays 0-d.

    (``np.ascontiguousarray`` turns a 0-d array into shape (1,), which TVM then rejects.)
    """
    return np.require(arr, requirements=["C", "A"])


def _aligned_empty(shape: tuple[int, ...], dtype: str | np.dtype, align: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``align``-byte boundary."""
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dt).reshape(shape)


class _PooledOutput:
    """An output array run() returns, with its TVM view, reused by the next run() once nothing
    outside the pool refers to it (its memory, or any view of it).

    Making a fresh 64-byte aligned array and its DLPack view costs 4 us of Python in a loop by
    itself, but 35-45 us inside run(), right after the kernels (their data has pushed the
    interpreter's out of the caches; ResNet-18 layer2 3x3/2 as a one-layer model, 2 threads,
    in-place timers per run() phase): more than the 0.03 ms its whole output conversion takes.
    Reuse is decided by reference counts: the array is held by the pool and by its DLPack view;
    every numpy view of it holds its base buffer. A caller keeping the array, a view or a memoryview
    of it, raises one of the two counts, and run() then writes a new array instead.
    """

    __slots__ = ("array", "tensor", "base", "_array_refs", "_base_refs")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        array = _aligned_empty(shape, dtype)
        self.array, self.base = array, array.base
        self.tensor = tvm.runtime.from_dlpack(array)
        self._array_refs = sys.getrefcount(self.array) - 1  # less the local ``array``
        self._base_refs = sys.getrefcount(self.base)

    def released(self) -> bool:
        """True if only the pool (and the array's own view of its base) refer to the memory."""
        return sys.getrefcount(self.array) == self._array_refs and sys.getrefcount(self.base) == self._base_refs


def _size(info: dict[str, Any]) -> int:
    """Element count of a plan value (numpy exports no usable data pointer for empty arrays)."""
    return int(np.prod(info["shape"], dtype=np.int64))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if hasattr(o, "value"):
        return o.value
    return str(o)


class Executable:
    """A compiled model: ``run`` it, ``save`` it, or inspect its inputs and outputs."""

    def __init__(self, lib: Any, plan: Plan, constants: dict[str, np.ndarray], target: TargetInfo,
                 so_path: str | None = None):
        self.lib = lib
        self.so_path = so_path
        self.plan = plan
        self.constants = constants
        self.target = target
        self._ready = False

    # ------------------------------------------------------------------ info
    @property
    def input_names(self) -> list[str]:
        """Graph input names in positional order."""
        return list(self.plan.inputs)

    @property
    def output_names(self) -> list[str]:
        """Graph output names in order."""
        return list(self.plan.output_names)

    def input_info(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """name -> (shape, dtype) of each input."""
        return {n: (tuple(self.plan.values[n]["shape"]), self.plan.values[n]["dtype"]) for n in self.plan.inputs}

    @property
    def num_kernels(self) -> int:
        """Distinct compiled kernels."""
        return len(self.plan.kernels)

    # ------------------------------------------------------------------ run
    def _prepare(self) -> None:
        if self._ready:
            return
        if not self.target.host_runnable:
            raise PortableError(f"model was compiled for {self.target.name}; it cannot run on this machine "
                                "(save it and run it on the device)")
        configure_threads()
        dev = tvm.cpu(0)
        tensors: dict[str, Any] = {}
        for name, arr in self.constants.items():
            tensors[name] = tvm.runtime.tensor(_dense(arr), dev)
        slot_size: dict[int, int] = {}
        for v, s in self.plan.slots.items():
            info = self.plan.values[v]
            slot_size[s] = max(slot_size.get(s, 1), int(np.prod(info["shape"], dtype=np.int64)) or 1)
        slot_dtype = {s: self.plan.values[v]["dtype"] for v, s in self.plan.slots.items()}
        slot_base = {s: tvm.runtime.empty((n,), slot_dtype[s], dev) for s, n in slot_size.items()}
        for v, s in self.plan.slots.items():
            info = self.plan.values[v]
            tensors[v] = slot_base[s]._create_view(tuple(info["shape"]), info["dtype"])
        for v, info in self.plan.values.items():
            if v not in tensors:
                tensors[v] = tvm.runtime.empty(tuple(info["shape"]), info["dtype"], dev)
        self._tensors = tensors
        self._calls = [(self.lib[s["kernel"]], [tensors[a] for a in s["args"]]) for s in self.plan.steps]
        #: value -> every (call, argument) position reading or writing it, for zero-copy binding in run()
        self._uses: dict[str, list[tuple[int, int]]] = {}
        self._written: set[str] = set()  # values some kernel writes (not constants or inputs)
        #: inputs every kernel reading them accepts at any element-aligned address (see
        #: ``build.relax_input_alignment``): run() hands those kernels the caller's array as it is
        self._unaligned_ok: set[str] = set()
        relaxed: set[tuple[int, int]] = set()
        for ci, st in enumerate(self.plan.steps):
            for ai, a in enumerate(st["args"]):
                self._uses.setdefault(a, []).append((ci, ai))
            self._written.update(st["args"][st["num_inputs"]:])
            info = self.plan.kernels.get(st["kernel"], {})
            relaxed.update((ci, ai) for ai in info.get("unaligned_params", ()))
        for name in self.plan.inputs:
            if self._uses.get(name) and all(use in relaxed for use in self._uses[name]):
                self._unaligned_ok.add(name)
        # what run() checks and allocates on every call, worked out once
        self._input_specs = [(n, tuple(self.plan.values[n]["shape"]), np.dtype(self.plan.values[n]["dtype"]))
                             for n in self.plan.inputs]
        self._fresh_outputs = [(o, tuple(self.plan.values[o]["shape"]), np.dtype(self.plan.values[o]["dtype"]))
                               for o in dict.fromkeys(self.plan.outputs)
                               if o in self._written and _size(self.plan.values[o])]
        #: output -> the array run() last returned for it, reused once the caller let go of it
        self._output_pool: dict[str, _PooledOutput] = {}
        self._ready = True

    def _bind_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any], zero_copy: bool = False) -> dict[str, Any]:
        """Check and bind the inputs. With ``zero_copy``, aligned C-contiguous arrays are not copied:
        returns name -> tensor view of the caller's array for those (the others are copied)."""
        names = self.plan.inputs
        if args and kwargs:
            raise InputError("pass inputs either positionally or by name, not both")
        given: Any
        if args and not (len(args) == 1 and isinstance(args[0], dict)):
            if len(args) != len(names):
                raise InputError(f"model takes {len(names)} input(s) {names}, got {len(args)}")
            given = args  # positional, in graph order: no names to check
        else:
            if args:
                kwargs = dict(args[0])
            unknown = [k for k in kwargs if k not in names]
            if unknown:
                raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {names}")
            missing = [n for n in names if n not in kwargs]
            if missing:
                raise InputError(f"missing input(s) {missing}; the model's inputs are {names}")
            given = [kwargs[n] for n in names]
        views: dict[str, Any] = {}
        for (name, want_shape, want_dtype), arr in zip(self._input_specs, given):
            if type(arr) is not np.ndarray:
                if hasattr(arr, "numpy"):
                    arr = arr.numpy()
                arr = np.asarray(arr)
            if arr.dtype != want_dtype:
                raise InputError(f"input {name!r}: expected dtype {want_dtype}, got {arr.dtype}")
            if arr.shape != want_shape:
                raise InputError(f"input {name!r}: expected shape {want_shape}, got {tuple(arr.shape)}")
            flags = arr.flags
            in_place = zero_copy and arr.ndim and arr.size and flags.c_contiguous and flags.writeable
            if in_place and name in self._unaligned_ok and flags.aligned:
                views[name] = arr  # passed to the kernels as is (TVM wraps it without a copy)
            elif in_place and arr.ctypes.data % 64 == 0:  # (.ctypes costs 2.5 us: only when needed)
                views[name] = tvm.runtime.from_dlpack(arr)
            else:
                self._tensors[name].copyfrom(_dense(arr))
        return views

    def run(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        """Run the model. Inputs positionally (graph order), as a dict, or by name; returns numpy outputs.

        Zero-copy where possible: kernels write each output straight into a fresh (64-byte aligned)
        numpy array that is returned, and read a C-contiguous input in place (wherever it starts, when
        the kernels reading it were built for that; else only when it is 64-byte aligned); other
        inputs are copied into the executable's own aligned buffers.
        """
        self._prepare()
        feeds = self._bind_inputs(args, kwargs, zero_copy=True)
        results: dict[str, np.ndarray] = {}
        views = dict(feeds)
        for o, shape, dtype in self._fresh_outputs:
            if o not in views:
                pooled = self._output_pool.get(o)
                if pooled is None or not pooled.released():
                    pooled = self._output_pool[o] = _PooledOutput(shape, dtype)
                results[o], views[o] = pooled.array, pooled.tensor
        for name, view in views.items():
            for ci, ai in self._uses.get(name, ()):
                self._calls[ci][1][ai] = view
        try:
            for fn, targs in self._calls:
                fn(*targs)
        finally:
            for name in views:
                for ci, ai in self._uses.get(name, ()):
                    self._calls[ci][1][ai] = self._tensors[name]
        out = []
        for o in self.plan.outputs:
            if o in results:
                out.append(results[o])
            elif o in feeds:
                out.append(np.array(feeds[o].numpy() if hasattr(feeds[o], "numpy") else feeds[o]))
            else:
                out.append(self._tensors[o].numpy())
        return out

    __call__ = run

    def run_swap(self, feeds: dict[str, Any], swap: Any = (), fetch: Any = ()) -> list[np.ndarray]:
        """Run with some inputs fed by name (others keep their device values from the previous run).

        Afterwards each ``(input, output)`` pair in ``swap`` exchanges device buffers, so an updated
        value (a trained parameter, optimizer state) becomes the next run's input without a copy.
        Returns the ``fetch`` values (read before swapping) as numpy arrays. Used by training.
        """
        self._prepare()
        for name, arr in feeds.items():
            if name not in self.plan.values or name not in self.plan.inputs:
                raise InputError(f"unknown input {name!r}; the model's inputs are {self.plan.inputs}")
            want = tuple(self.plan.values[name]["shape"])
            arr = np.asarray(arr)
            if tuple(arr.shape) != want or str(arr.dtype) != self.plan.values[name]["dtype"]:
                raise InputError(f"input {name!r}: expected {want} {self.plan.values[name]['dtype']}, "
                                 f"got {tuple(arr.shape)} {arr.dtype}")
            self._tensors[name].copyfrom(np.require(arr, requirements="C"))
        for fn, targs in self._calls:
            fn(*targs)
        out = [self._tensors[f].numpy() for f in fetch]
        if swap:
            for a, b in swap:
                self._tensors[a], self._tensors[b] = self._tensors[b], self._tensors[a]
            self._calls = [(fn, [self._tensors[a] for a in st["args"]])
                           for (fn, _), st in zip(self._calls, self.plan.steps)]
        return out

    def write(self, name: str, value: np.ndarray) -> None:
        """Set the device value of input ``name`` without running (it persists until overwritten)."""
        self._prepare()
        info = self.plan.values.get(name)
        arr = np.asarray(value)
        if name not in self.plan.inputs or info is None:
            raise InputError(f"unknown input {name!r}; the model's inputs are {self.plan.inputs}")
        if tuple(arr.shape) != tuple(info["shape"]) or str(arr.dtype) != info["dtype"]:
            raise InputError(f"input {name!r}: expected {tuple(info['shape'])} {info['dtype']}, "
                             f"got {tuple(arr.shape)} {arr.dtype}")
        self._tensors[name].copyfrom(np.require(arr, requirements="C"))

    def read(self, name: str) -> np.ndarray:
        """Current device value of an input or output (after ``run``/``run_swap``) as numpy."""
        self._prepare()
        return self._tensors[name].numpy()

    def bind(self, *args: Any, **kwargs: Any) -> None:
        """Copy inputs into the executable's own buffers (for ``launch``)."""
        self._prepare()
        self._bind_inputs(args, kwargs)

    def launch(self) -> None:
        """Run the kernels on the inputs of the last ``bind`` (no input or output copies): the
        compute part of ``run``, for timing it apart from the I/O."""
        self._prepare()
        for fn, targs in self._calls:
            fn(*targs)

    def step_call(self, index: int) -> Callable[[], None]:
        """Step ``index``'s kernel as a no-argument call on its planned buffers, for timing one kernel
        alone (``bind`` then ``launch`` fill the buffers it reads)."""
        self._prepare()
        fn, targs = self._calls[index]
        return lambda: fn(*targs)

    def time_run(self, *args: Any, repeat: int = 20, warmup: int = 3) -> list[float]:
        """Wall-clock seconds of ``repeat`` runs after ``warmup`` (inputs bound once)."""
        import time

        self._prepare()
        self._bind_inputs(args, {})  # copied into the executable's buffers, which the timed calls read
        for _ in range(warmup):
            for fn, targs in self._calls:
                fn(*targs)
        out = []
        for _ in range(repeat):
            t = time.perf_counter()
            for fn, targs in self._calls:
                fn(*targs)
            out.append(time.perf_counter() - t)
        return out

    def profile(self, *args: Any, repeat: int = 20, warmup: int = 1) -> list[tuple[str, float]]:
        """Median seconds of each kernel call in plan order over ``repeat`` whole runs after
        ``warmup`` untimed ones (inputs bound from ``args``)."""
        import time

        self._prepare()
        self._bind_inputs(args, {})  # copied into the executable's buffers, which the timed calls read
        for _ in range(max(warmup, 1)):
            for fn, targs in self._calls:
                fn(*targs)
        times: list[list[float]] = [[] for _ in self._calls]
        for _ in range(repeat):
            for i, (fn, targs) in enumerate(self._calls):
                t = time.perf_counter()
                fn(*targs)
                times[i].append(time.perf_counter() - t)
        return [(s["kernel"], float(np.median(t))) for s, t in zip(self.plan.steps, times)]

    # ------------------------------------------------------------------ save / load
    def save(self, path: str) -> None:
        """Write a self-contained .ptb file (zip: kernels.so, plan.json, constants.npz)."""
        with tempfile.TemporaryDirectory() as tmp:
            so = self.so_path or os.path.join(tmp, "kernels.so")
            if not self.so_path:
                export_library(self.lib, so, self.target)
            buf = io.BytesIO()
            np.savez(buf, **{f"c{i}": v for i, v in enumerate(self.constants.values())})
            names = list(self.constants)
            with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
                z.write(so, "kernels.so")
                z.writestr("plan.json", self.plan.to_json())
                z.writestr("constants.json", json.dumps(names))
                z.writestr("constants.npz", buf.getvalue())


def export_library(lib: Any, path: str, target: TargetInfo) -> None:
    """Export compiled kernels as a shared library, cross-linking for non-host targets."""
    if target.cross_compiler:
        import shutil

        from tvm.support import cc

        if shutil.which(target.cross_compiler) is None:
            raise PortableError(f"exporting for {target.name} needs the cross compiler {target.cross_compiler} "
                                f"on PATH (Debian: apt-get install g++-{target.cross_compiler.rsplit('-', 1)[0]})")

        lib.export_library(path, fcompile=cc.cross_compiler(target.cross_compiler))
    else:
        lib.export_library(path)


def load(path: str) -> Executable:
    """Load a .ptb file written by ``Executable.save``."""
    if not os.path.exists(path):
        raise PortableError(f"compiled model not found: {path}")
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise PortableError(f"{path} is not a portable compiled model") from exc
    with z:
        plan = Plan.from_json(z.read("plan.json").decode())
        names = json.loads(z.read("constants.json"))
        with np.load(io.BytesIO(z.read("constants.npz"))) as data:
            constants = {n: data[f"c{i}"] for i, n in enumerate(names)}
        tmp = tempfile.mkdtemp(prefix="portable-")
        so = os.path.join(tmp, "kernels.so")
        with open(so, "wb") as f:
            f.write(z.read("kernels.so"))
    target = resolve_target(plan.target)
    lib = tvm.runtime.load_module(so) if target.host_runnable else None
    return Executable(lib, plan, constants, target, so)
