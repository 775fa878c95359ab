#!/usr/bin/env bash
# Every benchmark, each writing JSON + PNG to benchmarks/results/ (ratios measured in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PORTABLE_NO_CACHE=1
python benchmarks/bench_inference.py --models resnet18,mobilenet_v2,transformer,light --repeat 15 --relax-repeat 2 \
    --out benchmarks/results/inference.json
python benchmarks/bench_tuning.py --size 512 --trials 64
python benchmarks/bench_training.py
