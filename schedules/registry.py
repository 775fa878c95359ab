"""Template base class, registry and the entry point used by the compiler and the tuner."""

from __future__ import annotations

import itertools
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm.s_tir import Schedule

log = logging.getLogger("portable.schedules")


@dataclass
class ScheduleContext:
    """What a template may know about the kernel it schedules."""

    family: str
    anchor_block: str | None
    anchor_attrs: dict[str, Any]
    target: Any  # portable.targets.TargetInfo
    const_params: set[int] = field(default_factory=set)  # PrimFunc params that are compile-time constants
    #: filled by templates: param index -> IndexMap applied to that constant's layout
    layout_rewrites: dict[int, Any] = field(default_factory=dict)

    @property
    def lanes(self) -> int:
        """float32 SIMD lanes of the target."""
        return max(1, self.target.vector_lanes_f32)


class Template:
    """A schedule template: a knob space plus a function applying knob values."""

    family: str = "generic"
    target_family: str = "x86"
    #: knobs added after tuning records were written, with the value that reproduces what those
    #: records measured: a record without the knob gets this value, not the (newer) default
    knobs_before_records: dict[str, Any] = {}

    def space(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, list[Any]]:
        """Knob name -> candidate values. Every combination must compile and be correct."""
        return {}

    def defaults(self, sch: Schedule, ctx: ScheduleContext) -> dict[str, Any]:
        """Knob values used when no tuning record exists (first value of each knob by default)."""
        return {k: v[0] for k, v in self.space(sch, ctx).items()}

    def with_logged(self, defaults: dict[str, Any], knobs: dict[str, Any] | None) -> dict[str, Any]:
        """The whole point a (possibly partial) logged ``knobs`` stands for: ``defaults``, with
        ``knobs_before_records`` for the knobs it lacks, then its own values (unknown names dropped)."""
        chosen = dict(defaults)
        if knobs:
            chosen.update({k: v for k, v in self.knobs_before_records.items() if k in chosen and k not in knobs})
            chosen.update({k: v for k, v in knobs.items() if k in chosen})
        return chosen

    def apply(self, sch: Schedule, ctx: ScheduleContext, knobs: dict[str, Any]) -> None:
        """Transform ``sch`` in place."""
        raise NotImplementedError

    def random_point(self, sch: Schedule, ctx: ScheduleContext, rng: random.Random) -> dict[str, Any]:
        """A uniformly drawn point of the knob space."""
        return {k: rng.choice(v) for k, v in self.space(sch, ctx).items()}

    def all_points(self, sch: Schedule, ctx: ScheduleContext) -> list[dict[str, Any]]:
        """Every point of the knob space (for small spaces)."""
        space = self.space(sch, ctx)
        keys = list(space)
        return [dict(zip(keys, vals)) for vals in itertools.product(*(space[k] for k in keys))]


TEMPLATES: dict[tuple[str, str], Template] = {}


def register_template(tpl: Template) -> Template:
    """Add a template instance to the registry."""
    TEMPLATES[(tpl.family, tpl.target_family)] = tpl
    return tpl


def get_template(family: str, target_family: str) -> Template:
    """Template for a family on a target family, falling back to the generic one."""
    from . import x86  # noqa: F401  (registers the x86 templates)

    for key in ((family, target_family), ("generic", target_family), ("generic", "x86")):
        if key in TEMPLATES:
            return TEMPLATES[key]
    raise KeyError(f"no schedule template for {family} on {target_family}")


def apply_schedule(func: tvm.tirx.PrimFunc, ctx: ScheduleContext,
                   knobs: dict[str, Any] | None = None) -> tuple[tvm.tirx.PrimFunc, dict[str, Any]]:
    """Schedule ``func``; returns the scheduled function and the knob values used."""
    tpl = get_template(ctx.family, ctx.target.family)
    sch = Schedule(func)
    try:
        chosen = tpl.with_logged(tpl.defaults(sch, ctx), knobs)
        tpl.apply(sch, ctx, chosen)
        return sch.mod["main"], chosen
    except Exception as exc:  # noqa: BLE001 - any template failure falls back to the generic schedule
        fallback = get_template("generic", ctx.target.family)
        if tpl is fallback or not knobs_fallback_allowed():
            raise
        log.warning("template %s failed on this kernel (%s); using the generic schedule",
                    type(tpl).__name__, str(exc).splitlines()[0][:200])
        ctx.layout_rewrites.clear()
        sch = Schedule(func)
        chosen = fallback.defaults(sch, ctx)
        fallback.apply(sch, ctx, chosen)
        return sch.mod["main"], {"fallback": "generic", **chosen}


def knobs_fallback_allowed() -> bool:
    """Tuning sets PORTABLE_STRICT_SCHEDULES=1 so a failing knob point is reported, not hidden."""
    return os.environ.get("PORTABLE_STRICT_SCHEDULES") != "1"
