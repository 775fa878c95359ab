"""Shipped tuning logs on a machine with another core count: logged knobs against template defaults.

The shipped logs were tuned on 2 cores (target keys ``.../c2``). Run on fewer cores (the process is
pinned to ``--cores`` CPUs before TVM starts, so its target key becomes ``.../c<cores>``), the
compiler reads them as *sibling* records (``portable.tune.records.TuningDatabase``). Each model is
compiled with and without the logs and both are timed in alternating rounds of the same process;
the ratio is reported as the median of per-round ratios with its 95% interval.

    PORTABLE_NO_CACHE=1 python benchmarks/bench_sibling_logs.py --cores 1 --targets host,x86-avx2
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info, paired_ratio, plot_ratios, set_threads, time_interleaved, write_json  # noqa: E402


def bench_model(name: str, target: str, repeat: int, rounds: int) -> dict[str, Any]:
    """Logged knobs (read from sibling targets) against defaults for one model on one target."""
    import numpy as np

    import portable
    from models import get_model, random_inputs
    from portable.targets import resolve_target

    model = get_model(name)
    feeds = random_inputs(model)
    logged = portable.compile(model, target=target, cache=False)
    default = portable.compile(model, target=target, use_tuning_logs=False, cache=False)
    differing = sum(1 for f, info in logged.plan.kernels.items()
                    if info["knobs"] != default.plan.kernels.get(f, {}).get("knobs"))
    for got, want in zip(logged.run(**feeds), default.run(**feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    t = time_interleaved({"logged": lambda: logged.run(**feeds), "defaults": lambda: default.run(**feeds)},
                         repeat, warmup=2, rounds=rounds)
    out = {"target_key": resolve_target(target).key, "kernels": len(logged.plan.kernels),
           "kernels_with_logged_knobs": differing, "logged_ms": t["logged"].median_ms,
           "defaults_ms": t["defaults"].median_ms, "logged_vs_defaults": paired_ratio(t["logged"], t["defaults"])}
    print(f"{target} {name}: {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cores", type=int, default=1, help="CPUs to pin to (the logs were tuned on 2)")
    p.add_argument("--targets", default="host,x86-avx2")
    p.add_argument("--models", default="resnet18,mobilenet_v2")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/sibling_logs.json")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    set_threads(args.cores)
    result: dict[str, Any] = {"machine": machine_info(args.cores), "cores": args.cores, "runs": {}}
    for target in [t for t in args.targets.split(",") if t]:
        for name in [m for m in args.models.split(",") if m]:
            result["runs"][f"{target}/{name}"] = bench_model(name, target, args.repeat, args.rounds)
            write_json(args.out, result)
    plot_ratios(os.path.splitext(args.out)[0] + ".png",
                {k: {"logged/defaults": r["logged_vs_defaults"]["median"]} for k, r in result["runs"].items()},
                f"sibling-target logs (tuned on 2 cores) on {args.cores} core(s)",
                ylabel="time with logged knobs / with defaults (lower is better)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
