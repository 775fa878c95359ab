"""``portable tune`` and ``portable logs`` subcommands (wired into ``portable/cli.py``)."""

from __future__ import annotations

import argparse
import json
import sys

from .measure import CACHE_PROTOCOLS


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune a model's kernels, or one kernel with ``--kernel``/``--shape``."""
    from ..errors import PortableError
    from .api import format_summary, tune, tune_kernel
    from .measure import MeasureOptions

    options = MeasureOptions(timeout_s=args.timeout, cache=args.cache)
    rpc = None
    if args.rpc:
        host, _, port = args.rpc.rpartition(":")
        rpc = (host or "127.0.0.1", int(port))
    common = dict(target=args.target, trials=args.trials, budget=args.budget, resume=args.resume, log=args.log,
                  batch_size=args.batch, seed=args.seed, progress=not args.no_progress, options=options, rpc=rpc,
                  confirm=args.confirm)
    if args.kernel:
        if not args.shape or args.model:
            raise PortableError("tune --kernel KIND needs --shape (e.g. 1024x1024x1024) and no model path")
        summary = tune_kernel(args.kernel, args.shape, **common)
    else:
        if not args.model:
            raise PortableError("tune: give a model path, or --kernel matmul --shape MxNxK")
        import portable

        shapes = {}
        for item in args.input_shape or []:
            name, _, dims = item.partition("=")
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        summary = tune(portable.load_onnx(args.model, shapes or None), **common)
    print(format_summary(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """show | best | merge | prune tuning logs."""
    from .records import load_all, log_files, merge, prune, show

    paths = args.paths or log_files()
    if args.action in ("show", "best"):
        print(show(load_all(paths), best_only=args.action == "best"))
        return 0
    if args.action == "merge":
        if not args.out:
            print("logs merge: --out FILE is required", file=sys.stderr)
            return 2
        print(f"wrote {args.out}: {merge(paths, args.out)} records")
        return 0
    if len(paths) != 1 and args.out:
        print("logs prune: give one log with --out (or several logs to prune in place)", file=sys.stderr)
        return 2
    for p in paths:
        n = prune(p, keep=args.keep, out=args.out)
        print(f"{args.out or p}: kept {n} records (best {args.keep} per kernel and target)")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tune`` and ``logs`` to the ``portable`` command line."""
    t = subparsers.add_parser("tune", help="tune a model's kernels (or one kernel) and log the best schedules",
                              description="portable tune model.onnx --target host --budget 15m | --trials N; "
                                          "portable tune --kernel matmul --shape 1024x1024x1024 --trials 200")
    t.add_argument("model", nargs="?", help="ONNX model")
    t.add_argument("--target", default="host")
    t.add_argument("--trials", type=int, help="measured candidates in total (0 with --resume: no new candidates, "
                   "only re-measure each kernel's logged leaders)")
    t.add_argument("--budget", help="wall time: 90s, 15m, 1h")
    t.add_argument("--resume", dest="resume", action="store_true", default=True,
                   help="skip candidates already in the logs (default)")
    t.add_argument("--no-resume", dest="resume", action="store_false")
    t.add_argument("--log", help="append records here (default $PORTABLE_TUNING_DIR/tuning.jsonl)")
    t.add_argument("--kernel", help="tune one kernel instead of a model: matmul or conv2d")
    t.add_argument("--shape", help="kernel shape: matmul MxNxK; conv2d NxCxHxWxOxKHxKW[:sS][:pP][:gG]")
    t.add_argument("--input-shape", action="append", help="NAME=1x3x224x224 for symbolic model inputs")
    t.add_argument("--batch", type=int, default=8, help="candidates per measured batch")
    t.add_argument("--confirm", type=int, default=3,
                   help="fastest points per kernel measured once more at the end (with its default)")
    t.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per candidate")
    t.add_argument("--cache", choices=CACHE_PROTOCOLS, default="cold",
                   help="cache state of each timed call: cold (weights flushed to memory: models whose weights "
                        "do not fit the last-level cache), warm (arguments in L3: models that fit it), hot "
                        "(back to back)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--rpc", help="measure on a tvm.rpc server HOST:PORT")
    t.add_argument("--json", help="also write the summary as JSON here")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(fn=cmd_tune)
    lg = subparsers.add_parser("logs", help="show, merge or prune tuning logs")
    lg.add_argument("action", choices=["show", "best", "merge", "prune"])
    lg.add_argument("paths", nargs="*", help="log files (default: every log portable reads)")
    lg.add_argument("--out", help="output file (merge; prune without editing in place)")
    lg.add_argument("--keep", type=int, default=1, help="prune: records kept per kernel and target")
    lg.set_defaults(fn=cmd_logs)
