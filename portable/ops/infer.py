"""Output types of a node, derived from its operator's own tensor expression."""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import te

from ..errors import ModelError, PortableError
from ..graph import Node, TensorInfo
from .registry import REGISTRY, Attrs, shape_of


def infer_node(node: Node, values: dict[str, TensorInfo], constants: dict[str, np.ndarray],
               count_outputs: bool = True) -> None:
    """Call the op's compute on placeholders, record each output's TensorInfo in ``values`` and
    trim ``node.outputs`` to the outputs the op produces. Errors name the node.

    ``count_outputs=False`` hides the node's output count from the op (for probes that list spare
    outputs: Split would otherwise split into that many pieces)."""
    op = REGISTRY[node.op]
    args: list[Any] = []
    for idx, name in enumerate(node.inputs):
        if not name:
            args.append(None)
        elif idx in op.const_inputs:
            if name not in constants:
                raise ModelError(f"{node.describe()}: input {idx} ({name!r}) must be a compile-time constant")
            args.append(constants[name])
        else:
            info = values[name]
            args.append(te.placeholder(info.shape, info.dtype, name=f"in{idx}"))
    try:
        outs = op.compute(args, Attrs(node.attrs, node.opset, node.describe(), len(node.outputs) if count_outputs else None))
    except PortableError:
        raise
    except Exception as exc:
        shapes = [values[i].shape if i else None for i in node.inputs]
        raise ModelError(f"{node.describe()}: cannot build its computation for input shapes {shapes}: {exc}") from exc
    for name, t in zip(node.outputs, outs):
        if name:
            values[name] = TensorInfo(shape_of(t), str(t.dtype))
    node.outputs = node.outputs[: len(outs)]
