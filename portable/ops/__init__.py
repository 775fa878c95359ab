"""Operator library: importing this package registers every operator."""

from . import (  # noqa: F401
    conv,
    elementwise,
    matmul,
    movement,
    nn,
    blocked,
    normalization,
    reduce,
    training,
    winograd,
)
from .registry import REGISTRY, OpDef, Pattern, lookup, register

__all__ = ["REGISTRY", "OpDef", "Pattern", "lookup", "register"]
