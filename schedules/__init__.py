"""Schedule templates, per operator family and target family.

A template says *how* a kernel runs (tiling, vectorising, parallel loops, layouts) and declares
the knobs tuning may turn; it never changes *what* is computed. ``apply_schedule`` picks the
template for a kernel's family on a target, takes knob values from the tuning logs or the
template's defaults, and returns the scheduled function.
"""

from .registry import TEMPLATES, ScheduleContext, Template, apply_schedule, get_template

__all__ = ["TEMPLATES", "ScheduleContext", "Template", "apply_schedule", "get_template"]
