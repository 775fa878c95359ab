"""``portable train``: fine-tune an ONNX model on arrays from an .npz file."""

from __future__ import annotations

import argparse
import time

import numpy as np


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``train`` sub-command on the portable CLI's subparsers."""
    p = subparsers.add_parser("train", help="train an ONNX model (forward+backward+update compiled once)")
    p.add_argument("model", help="ONNX model to train")
    p.add_argument("--data", required=True, help=".npz with arrays 'x' (inputs) and 'y' (targets)")
    p.add_argument("--loss", default="cross_entropy", help="cross_entropy, nll, mse, l1, or a loss value name")
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--target", default="host")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default=None, help="where to write the trained ONNX model")
    p.set_defaults(fn=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train ``args.model`` on ``args.data``; prints a tqdm bar with loss and samples/s."""
    from tqdm import tqdm

    from .optim import SGD, Adam, AdamW
    from .train import Trainer

    data = np.load(args.data)
    if "x" not in data or "y" not in data:
        raise SystemExit(f"{args.data} must contain arrays 'x' and 'y' (found {list(data.keys())})")
    x, y = data["x"], data["y"]
    opt = {"sgd": lambda: SGD(args.lr, momentum=args.momentum), "adam": lambda: Adam(args.lr),
           "adamw": lambda: AdamW(args.lr)}[args.optimizer]()
    trainer = Trainer(args.model, loss=args.loss, optimizer=opt, target=args.target)
    rng = np.random.default_rng(args.seed)
    steps = len(x) // args.batch
    if steps == 0:
        raise SystemExit(f"batch size {args.batch} is larger than the data set ({len(x)} samples)")
    for epoch in range(args.epochs):
        order = rng.permutation(len(x))
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{args.epochs}", unit="step")
        t0, loss = time.perf_counter(), float("nan")
        for s in bar:
            idx = order[s * args.batch:(s + 1) * args.batch]
            loss = trainer.step(x[idx], y[idx])
            rate = (s + 1) * args.batch / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss:.4f}", samples_per_s=f"{rate:.0f}")
    out = args.output or args.model.replace(".onnx", "") + ".trained.onnx"
    trainer.export_onnx(out)
    print(f"wrote {out}")
    return 0
