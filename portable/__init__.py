"""portable: compile ONNX models to tuned TVM kernels for x86, ARM and CUDA, for inference and training."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any, Mapping  # noqa: E402

from .errors import InputError, ModelError, PortableError, UnsupportedOperatorError  # noqa: E402
from .graph import Graph  # noqa: E402


def load_onnx(model: Any, shapes: Mapping[str, tuple[int, ...]] | None = None) -> Graph:
    """Import an ONNX model (path, bytes or onnx.ModelProto); see portable.frontend.load_onnx."""
    from .frontend import load_onnx as _load

    return _load(model, shapes)


def compile(model: Any, target: str = "host", use_tuning_logs: bool = True, cache: bool = True) -> Any:  # noqa: A001
    """Compile a Graph (or anything ``load_onnx`` takes) for ``target``; returns an Executable."""
    from .compiler.driver import compile_model

    return compile_model(model, target=target, use_tuning_logs=use_tuning_logs, cache=cache)


def load(path: str) -> Any:
    """Load a compiled model saved with ``Executable.save``."""
    from .runtime import load as _load

    return _load(path)


_LAZY = {
    "tune": ("portable.tune", None),  # the package itself is callable: portable.tune(model, ...)
    "Trainer": ("portable.train", "Trainer"),
    "grad": ("portable.train", "grad"),
    "optim": ("portable.optim", None),
}


def __getattr__(name: str) -> Any:
    """Lazy attributes: tuning and training load only when used (they import xgboost, etc.)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'portable' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)


__all__ = ["Trainer", "grad", "optim", "tune", "Graph", "InputError", "ModelError", "PortableError", "UnsupportedOperatorError",
           "compile", "load", "load_onnx", "__version__"]
