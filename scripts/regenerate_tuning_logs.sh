#!/usr/bin/env bash
# Re-tune the benchmark models and ResNet-18 conv layers on this machine and write the records to the
# shipped log for this target (tuning_logs/<target key>.jsonl), then report tuned vs onnxruntime/numpy.
# This is how tuning_logs/llvm_icelake-server_c2.jsonl was produced (budgets 6m per model, 60s per kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
export PORTABLE_NO_CACHE=1
python benchmarks/bench_tuned.py --budget-model "${BUDGET_MODEL:-6m}" --budget-kernel "${BUDGET_KERNEL:-60s}" \
    --repeat 20 --out benchmarks/results/tuned.json
