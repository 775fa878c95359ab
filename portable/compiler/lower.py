"""Lowering: a fusion group -> TE (from the operators' algorithms) -> PrimFunc -> scheduled PrimFunc."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import te

from ..errors import ModelError, PortableError
from ..graph import Graph
from ..ops.registry import REGISTRY, Attrs, Pattern
from .fuse import Group


@dataclass
class Kernel:
    """One group lowered to an unscheduled PrimFunc and the values bound to its parameters."""

    name: str
    func: tvm.tirx.PrimFunc
    args: list[str]  # graph value per PrimFunc parameter (inputs, then outputs)
    num_inputs: int
    family: str
    anchor_block: str | None
    anchor_attrs: dict[str, Any]
    #: parameter index -> constant name, for inputs that are compile-time constants
    const_args: dict[int, str] = field(default_factory=dict)
    #: parameter index -> tvm IndexMap the schedule applied to that constant's layout
    layout_rewrites: dict[int, Any] = field(default_factory=dict)
    knobs: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs(self) -> list[str]:
        """Graph values this kernel writes."""
        return self.args[self.num_inputs:]


def _safe(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", name)[:40] or "v"


def _scalar_const(value: np.ndarray, shape: tuple[int, ...], dtype: str, name: str) -> te.Tensor:
    scalar = value.reshape(()).item()
    if dtype == "bool":
        imm = tvm.tirx.const(bool(scalar), "bool")
    else:
        imm = tvm.tirx.const(scalar, dtype)
    return te.compute(shape, lambda *_: imm, name=f"const_{_safe(name)}", tag="elemwise")


def lower_group(graph: Graph, group: Group, index: int) -> Kernel:
    """Build the TE of every node in ``group`` and turn it into a PrimFunc."""
    env: dict[str, Any] = {}
    placeholders: list[te.Tensor] = []
    arg_names: list[str] = []
    const_args: dict[int, str] = {}
    anchor_tensor = None

    for node in group.nodes:
        op = REGISTRY[node.op]
        args: list[Any] = []
        for idx, name in enumerate(node.inputs):
            if not name:
                args.append(None)
                continue
            if idx in op.const_inputs:
                args.append(graph.constants[name])
                continue
            if name not in env:
                info = graph.values[name]
                if name in graph.constants and graph.constants[name].size == 1:
                    env[name] = _scalar_const(graph.constants[name], info.shape, info.dtype, name)
                else:
                    ph = te.placeholder(info.shape, info.dtype, name=f"p{len(placeholders)}_{_safe(name)}")
                    if name in graph.constants:
                        const_args[len(placeholders)] = name
                    placeholders.append(ph)
                    arg_names.append(name)
                    env[name] = ph
            args.append(env[name])
        try:
            outs = op.compute(args, Attrs(node.attrs, node.opset, node.describe(), len(node.outputs)))
        except PortableError:
            raise
        except Exception as exc:
            raise ModelError(f"{node.describe()}: lowering failed: {exc}") from exc
        for name, t in zip(node.outputs, outs):
            if name:
                env[name] = t
        if node is group.anchor:
            anchor_tensor = _tagged_anchor(outs)

    consumers = graph.consumers()
    out_names = [o for n in group.nodes for o in n.outputs
                 if o and (o in graph.outputs or any(c not in group.nodes for c in consumers.get(o, [])))]
    out_tensors = []
    for o in out_names:
        t = env[o]
        if isinstance(t.op, te.PlaceholderOp) or any(t is x for x in out_tensors):
            t = te.compute(t.shape, lambda *i, t=t: t[i], name="copy", tag="injective")
        out_tensors.append(t)
    func = te.create_prim_func(placeholders + out_tensors)
    anchor_block = _find_anchor_block(func, anchor_tensor) if anchor_tensor is not None else None
    family = REGISTRY[group.anchor.op].family if group.anchor is not None else (
        "elemwise" if group.pattern <= Pattern.INJECTIVE else "generic")
    return Kernel(
        name=f"k{index}_{_safe(group.tail.op.lower())}",
        func=func.with_attr("global_symbol", f"k{index}"),
        args=arg_names + out_names,
        num_inputs=len(arg_names),
        family=family,
        anchor_block=anchor_block,
        anchor_attrs=dict(group.anchor.attrs) if group.anchor is not None else {},
        const_args=const_args,
    )


def _tagged_anchor(outs: list[te.Tensor]) -> te.Tensor:
    """The stage tagged "anchor" among an op's output stages and their producers (else outs[0])."""
    stack, seen = list(outs), set()
    while stack:
        t = stack.pop(0)
        if t.op.name in seen:
            continue
        seen.add(t.op.name)
        if getattr(t.op, "tag", "") == "anchor":
            return t
        stack.extend(getattr(t.op, "input_tensors", []))
    return outs[0]


def _find_anchor_block(func: tvm.tirx.PrimFunc, anchor: te.Tensor) -> str | None:
    """Name of the block computing ``anchor`` (create_prim_func may have made names unique)."""
    from tvm.s_tir import Schedule

    sch = Schedule(func)
    wanted = anchor.op.name
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    if wanted in names:
        return wanted
    candidates = [n for n in names if n.startswith(wanted)]
    return candidates[0] if candidates else None
