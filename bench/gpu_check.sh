#!/usr/bin/env bash
# The GPU check of issue 17, for a lent device: one run, under 8 minutes (an internal budget of 450 s stops starting
# new sections; the results file is rewritten after each section, so a cut-short run keeps what it measured).
#   - images/s, MFU (vs the GPU's dense bf16 peak) and peak memory of the bf16 + channels-last dira step, ResNet-50,
#     224², batch 64 / 128 / 256, eager and torch.compile;
#   - bf16 vs fp32 (TF32 off) loss curves over 100 steps on fixed real batches;
#   - a short dira pretraining at 64 px on the bundled PneumoniaMNIST + linear probe / kNN vs random init.
# Writes bench/results/gpu/<gpu name>.json and .md. Extra flags go to bench/gpu_check.py, e.g.
#   bench/gpu_check.sh --no-compile          bench/gpu_check.sh --dry-run   (CPU smoke test, seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA available:', torch.cuda.is_available())"
exec timeout -k 10 480 "$PY" bench/gpu_check.py "$@"
