"""Compile-time re-layout of constant operands (weight packing) chosen by templates.

A template that packs a constant weight transforms the buffer in the schedule with an IndexMap
and records the same rewrite here as a cheap numpy reshape+transpose, which the compiler
applies once to the constant. ``tests/test_layout.py`` checks both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SplitAxisRewrite:
    """Split ``axis`` into (extent // factor, factor), then transpose the result by ``perm``."""

    axis: int
    factor: int
    perm: tuple[int, ...]

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """The rewritten (packed) copy of ``arr``."""
        shape = arr.shape
        split = shape[: self.axis] + (shape[self.axis] // self.factor, self.factor) + shape[self.axis + 1:]
        return np.ascontiguousarray(arr.reshape(split).transpose(self.perm))

    def index_map(self):  # type: ignore[no-untyped-def]
        """The same rewrite as a tvm IndexMap (for the schedule's transform_layout)."""
        from tvm.tirx import IndexMap

        return IndexMap.from_func(self.as_func(), ndim=len(self.perm) - 1)

    def as_func(self):  # type: ignore[no-untyped-def]
        """The rewrite as a python function of the old indices returning the new ones."""
        axis, factor, perm = self.axis, self.factor, self.perm

        def fn(*idx):  # type: ignore[no-untyped-def]
            split = list(idx[:axis]) + [idx[axis] // factor, idx[axis] % factor] + list(idx[axis + 1:])
            return tuple(split[p] for p in perm)

        return fn
