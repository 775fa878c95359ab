"""Reverse-mode automatic differentiation over portable Graphs.

Adjoint rules live next to the operators' algorithms (``portable/ops/*.py``) or, for operator
files owned elsewhere, in ``portable/ops/*_adjoints.py``; importing this package registers them all.
"""

from __future__ import annotations

from .. import ops  # noqa: F401  (registers operators and the adjoints defined beside them)
from ..ops import (  # noqa: F401  (adjoints of operators defined in files without them)
    movement_adjoints,
    nn_adjoints,
    normalization_adjoints,
    reduce_adjoints,
)
from .builder import GradBuilder
from .grad import backward, differentiable_path
from .registry import ADJOINTS, AdjointDef, adjoint, get_adjoint

__all__ = ["ADJOINTS", "AdjointDef", "GradBuilder", "adjoint", "backward", "differentiable_path", "get_adjoint"]
