"""Tuning tasks: the distinct kernels of a model (or one kernel built from an operator's compute).

Tasks come from the compiler's own path (``simplify`` -> ``fuse`` -> ``lower_group``), so a task's
workload key is exactly the key the compiler looks up when it builds the model. A kernel that
appears several times in a model is one task whose weight is its occurrence count.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PortableError
from ..graph import Graph, Node, TensorInfo
from ..targets import TargetInfo, resolve_target
from .records import func_signature


@dataclass
class Task:
    """One kernel to tune on one target."""

    name: str
    workload: str
    family: str
    func: Any  # tvm.tirx.PrimFunc, unscheduled
    num_inputs: int
    anchor_block: str | None
    anchor_attrs: dict[str, Any]
    const_params: set[int]
    target: TargetInfo
    weight: int = 1
    flops: float = 0.0
    shape: list[list[int]] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)

    def context(self) -> Any:
        """A fresh ScheduleContext for this kernel (templates fill its layout rewrites)."""
        from schedules import ScheduleContext

        return ScheduleContext(self.family, self.anchor_block, dict(self.anchor_attrs), self.target,
                               set(self.const_params))

    def template(self) -> Any:
        """The schedule template for this kernel's family on the target."""
        from schedules import get_template

        return get_template(self.family, self.target.family)

    def space(self) -> dict[str, list[Any]]:
        """Knob name -> candidate values."""
        from tvm.s_tir import Schedule

        return self.template().space(Schedule(self.func), self.context())

    def defaults(self) -> dict[str, Any]:
        """The template's default knob values."""
        from tvm.s_tir import Schedule

        return self.template().defaults(Schedule(self.func), self.context())

    def space_size(self) -> int:
        """Number of points of the knob space."""
        return math.prod(len(v) for v in self.space().values())


def _estimate_flops(func: Any) -> float:
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except Exception:
        return 0.0


def _shallow_copy(graph: Graph) -> Graph:
    """A copy that graph passes may rewrite without touching the caller's graph (arrays shared)."""
    return Graph(graph.name, list(graph.inputs), list(graph.outputs), copy.deepcopy(graph.nodes),
                 dict(graph.values), dict(graph.constants), set(graph.params), graph.opset)


def extract_tasks(model: Any, target: str | TargetInfo | None = "host", min_space: int = 2) -> list[Task]:
    """Distinct (workload, family, target) kernels of a model, weighted by how often each occurs.

    Kernels whose template space has fewer than ``min_space`` points are left out (nothing to tune).
    """
    from .. import load_onnx
    from ..compiler.build import workload_key
    from ..compiler.fuse import fuse
    from ..compiler.lower import lower_group
    from ..compiler.passes import simplify

    graph = _shallow_copy(model) if isinstance(model, Graph) else load_onnx(model)
    tgt = resolve_target(target)
    graph = simplify(graph, tgt)
    tasks: dict[str, Task] = {}
    for gi, group in enumerate(fuse(graph)):
        kernel = lower_group(graph, group, gi)
        wkey = workload_key(kernel.func)
        if wkey in tasks:
            tasks[wkey].weight += 1
            continue
        shape, dtypes = func_signature(kernel.func)
        tasks[wkey] = Task(
            name=f"{kernel.family}:{kernel.name.split('_', 1)[1]}:{'x'.join(map(str, shape[-1]))}",
            workload=wkey, family=kernel.family, func=kernel.func, num_inputs=kernel.num_inputs,
            anchor_block=kernel.anchor_block, anchor_attrs=kernel.anchor_attrs,
            const_params=set(kernel.const_args), target=tgt, flops=_estimate_flops(kernel.func),
            shape=shape, dtypes=dtypes)
    return [t for t in tasks.values() if t.space_size() >= min_space]


def parse_dims(spec: str) -> list[int]:
    """``"1024x1024x1024"`` -> [1024, 1024, 1024]."""
    try:
        dims = [int(d) for d in spec.lower().replace(",", "x").split("x") if d]
    except ValueError:
        raise PortableError(f"shape {spec!r}: expected integers separated by 'x', e.g. 1024x1024x1024") from None
    if not dims or any(d <= 0 for d in dims):
        raise PortableError(f"shape {spec!r}: every dimension must be a positive integer")
    return dims


def matmul_graph(spec: str, dtype: str = "float32", const_weight: bool = True) -> Graph:
    """One MatMul ``[B x] M x K @ K x N`` from ``"MxNxK"`` or ``"BxMxNxK"``; B is a constant weight."""
    dims = parse_dims(spec)
    if len(dims) not in (3, 4):
        raise PortableError(f"matmul shape {spec!r}: expected MxNxK or BxMxNxK")
    batch, (m, n, k) = dims[:-3], dims[-3:]
    a_shape, b_shape = (*batch, m, k), (k, n)
    return _one_node_graph("MatMul", {}, [("A", a_shape), ("B", b_shape)], ("C", (*batch, m, n)),
                           {"B"} if const_weight else set(), dtype)


def conv2d_graph(spec: str, dtype: str = "float32") -> Graph:
    """One NCHW Conv from ``"NxCxHxWxOxKHxKW[:sS][:pP][:gG][:dD]"`` (stride, pad, groups, dilation)."""
    head, *opts = spec.split(":")
    dims = parse_dims(head)
    if len(dims) != 7:
        raise PortableError(f"conv2d shape {spec!r}: expected NxCxHxWxOxKHxKW[:sS][:pP][:gG][:dD]")
    n, c, h, w, o, kh, kw = dims
    attrs = {"s": 1, "p": 0, "g": 1, "d": 1}
    for opt in opts:
        if not opt or opt[0] not in attrs or not opt[1:].isdigit():
            raise PortableError(f"conv2d shape {spec!r}: bad option {opt!r} (use s2, p1, g1 or d1)")
        attrs[opt[0]] = int(opt[1:])
    s, p, g, d = attrs["s"], attrs["p"], attrs["g"], attrs["d"]
    if c % g or o % g:
        raise PortableError(f"conv2d shape {spec!r}: channels {c} and {o} must divide by groups {g}")
    oh = (h + 2 * p - d * (kh - 1) - 1) // s + 1
    ow = (w + 2 * p - d * (kw - 1) - 1) // s + 1
    if oh <= 0 or ow <= 0:
        raise PortableError(f"conv2d shape {spec!r}: kernel larger than the padded input")
    node_attrs = {"strides": [s, s], "pads": [p, p, p, p], "group": g, "dilations": [d, d],
                  "kernel_shape": [kh, kw]}
    return _one_node_graph("Conv", node_attrs, [("X", (n, c, h, w)), ("W", (o, c // g, kh, kw))],
                           ("Y", (n, o, oh, ow)), {"W"}, dtype)


def _one_node_graph(op: str, attrs: dict[str, Any], ins: list[tuple[str, tuple[int, ...]]],
                    out: tuple[str, tuple[int, ...]], consts: set[str], dtype: str) -> Graph:
    rng = np.random.default_rng(0)
    values = {name: TensorInfo(tuple(shape), dtype) for name, shape in ins}
    values[out[0]] = TensorInfo(tuple(out[1]), dtype)
    constants = {name: rng.standard_normal(shape).astype(dtype) for name, shape in ins if name in consts}
    node = Node(op, f"{op.lower()}0", [name for name, _ in ins], [out[0]], dict(attrs))
    return Graph(f"{op.lower()}_kernel", [name for name, _ in ins if name not in consts], [out[0]], [node],
                 values, constants, set(consts))


KERNELS = {"matmul": matmul_graph, "conv2d": conv2d_graph}


def kernel_task(kind: str, spec: str, target: str | TargetInfo | None = "host", dtype: str = "float32") -> Task:
    """The task of one kernel, e.g. ``kernel_task("matmul", "1024x1024x1024")``."""
    if kind not in KERNELS:
        raise PortableError(f"--kernel {kind!r}: choose one of {', '.join(sorted(KERNELS))}")
    tasks = extract_tasks(KERNELS[kind](spec, dtype=dtype), target, min_space=1)
    anchored = [t for t in tasks if t.family not in ("elemwise", "generic")] or tasks
    task = anchored[0]
    task.name = f"{kind}:{spec}"
    return task
