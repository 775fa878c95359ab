"""Command line: ``portable demo | info | compile | run | tune | logs | train``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import numpy as np


def _parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for item in items or []:
        name, _, dims = item.partition("=")
        shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
    return shapes


def cmd_demo(args: argparse.Namespace) -> int:
    """Build, compile, check and time the built-in example model."""
    from .demo import run_demo

    run_demo(args.target)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Ops used and supported, inputs and outputs of an ONNX model."""
    import onnx

    from .ops import REGISTRY

    model = onnx.load(args.model, load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    print(f"model: {args.model}  (opset {opset}, {len(model.graph.node)} nodes)")
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    print("operators:")
    for op, c in sorted(counts.items()):
        status = "supported" if op in REGISTRY or op in ("Identity", "Dropout") else "UNSUPPORTED"
        print(f"  {op:28s} x{c:<5d} {status}")
    inits = {i.name for i in model.graph.initializer}

    def desc(vi: Any) -> str:
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        return f"{vi.name}: {onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)} {dims}"

    print("inputs:")
    for vi in model.graph.input:
        if vi.name not in inits:
            print("  " + desc(vi))
    print("outputs:")
    for vi in model.graph.output:
        print("  " + desc(vi))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    """Compile an ONNX model to a .ptb file."""
    import portable

    graph = portable.load_onnx(args.model, _parse_shapes(args.shape))
    exe = portable.compile(graph, target=args.target)
    out = args.output or os.path.splitext(args.model)[0] + ".ptb"
    exe.save(out)
    print(f"wrote {out}: {exe.num_kernels} kernels for {exe.target.name} ({exe.target.key})")
    return 0


def _load_inputs(items: list[str], names: list[str]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            if len(names) != 1:
                raise SystemExit(f"--input {item}: use NAME=FILE (inputs: {names})")
            name, path = names[0], item
        if path.endswith(".npz"):
            with np.load(path) as data:
                feeds.update({k: data[k] for k in data.files})
        else:
            feeds[name] = np.load(path)
    return feeds


def cmd_run(args: argparse.Namespace) -> int:
    """Run a .ptb (or compile and run an .onnx) on inputs from .npy/.npz files."""
    import portable

    if args.model.endswith(".onnx"):
        exe = portable.compile(portable.load_onnx(args.model, _parse_shapes(args.shape)), target="host")
    else:
        exe = portable.load(args.model)
    feeds = _load_inputs(args.input or [], exe.input_names)
    outs = exe.run(**feeds)
    named = dict(zip(exe.output_names, outs))
    if args.output:
        np.savez(args.output, **named)
        print(f"wrote {args.output}")
    for name, arr in named.items():
        print(f"{name}: shape {arr.shape} dtype {arr.dtype} mean {arr.mean() if arr.size else 0:.6g}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="portable", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log compile steps")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="compile, check and time a built-in example model")
    d.add_argument("--target", default="host")
    d.set_defaults(fn=cmd_demo)
    i = sub.add_parser("info", help="operators, inputs and outputs of an ONNX model")
    i.add_argument("model")
    i.set_defaults(fn=cmd_info)
    c = sub.add_parser("compile", help="compile an ONNX model to a .ptb file")
    c.add_argument("model")
    c.add_argument("-o", "--output")
    c.add_argument("--target", default="host")
    c.add_argument("--shape", action="append", help="NAME=1x3x224x224 for symbolic input dims")
    c.set_defaults(fn=cmd_compile)
    r = sub.add_parser("run", help="run a compiled .ptb (or an .onnx) on .npy/.npz inputs")
    r.add_argument("model")
    r.add_argument("--input", action="append", help="NAME=file.npy or file.npz")
    r.add_argument("--output", help="write outputs to this .npz")
    r.add_argument("--shape", action="append")
    r.set_defaults(fn=cmd_run)
    for module in ("portable.tune.cli", "portable.train_cli"):
        try:
            mod = __import__(module, fromlist=["add_commands"])
        except ImportError:
            continue
        mod.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``portable`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from .errors import PortableError

    try:
        return int(args.fn(args) or 0)
    except PortableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
