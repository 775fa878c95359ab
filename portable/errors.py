"""Exceptions raised by portable, each phrased in the user's terms (node, operator, input)."""

from __future__ import annotations


class PortableError(Exception):
    """Base class of every error portable raises on purpose."""


class UnsupportedOperatorError(PortableError):
    """The model uses operators (or operator versions) portable cannot compile."""

    def __init__(self, problems: list[tuple[str, str, int, str]]):
        """``problems`` holds (op_type, node_name, opset, reason) for every offending node."""
        self.problems = problems
        by_op: dict[tuple[str, int], list[str]] = {}
        reasons: dict[tuple[str, int], str] = {}
        for op, node, opset, reason in problems:
            by_op.setdefault((op, opset), []).append(node)
            reasons[(op, opset)] = reason
        lines = [f"model uses {len(by_op)} unsupported operator type(s):"]
        for (op, opset), nodes in sorted(by_op.items()):
            shown = ", ".join(repr(n) for n in nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
            lines.append(f"  {op} (opset {opset}): {reasons[(op, opset)]}; nodes {shown}")
        super().__init__("\n".join(lines))


class ModelError(PortableError):
    """The ONNX model is malformed or inconsistent."""


class InputError(PortableError):
    """Inputs given at run time do not match what the compiled model expects."""


class UnsupportedAttributeError(UnsupportedOperatorError, ModelError):
    """A node sets an attribute to a value (variant) that portable deliberately does not implement.

    Raised at load time; names the node, operator, attribute and value, and what is supported. It
    is also a ModelError, which these load-time rejections were before they had their own class.
    """

    def __init__(self, node_desc: str, op_type: str, attribute: str, value: object, supported: str = "",
                 opset: int = 0):
        """``node_desc`` identifies the node (as ``Attrs.node_desc``); ``supported`` says what works."""
        self.node_desc, self.op_type, self.attribute, self.value = node_desc, op_type, attribute, value
        reason = f"{attribute}={value!r} is not supported" + (f" ({supported})" if supported else "")
        self.problems = [(op_type, node_desc, opset, reason)]
        PortableError.__init__(self, f"{node_desc}: attribute {reason}")
