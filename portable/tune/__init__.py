"""Auto-tuning: search each kernel's schedule-template knobs, measure candidates safely, log the best.

``portable.tune(model, target="host", trials=None, budget=None, resume=True, log=None)`` tunes a
model; ``portable tune`` / ``portable logs`` are the command-line equivalents. This package is
itself callable (``portable.tune(...)`` works whether ``portable.tune`` names the package or the
function), so exposing ``tune`` in ``portable/__init__.py`` cannot shadow it in a confusing way.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .api import format_summary, tune, tune_kernel, tune_tasks

__all__ = ["format_summary", "tune", "tune_kernel", "tune_tasks"]


class _CallableModule(types.ModuleType):
    """Module type whose instances forward calls to :func:`tune`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Same as :func:`portable.tune.api.tune`."""
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
