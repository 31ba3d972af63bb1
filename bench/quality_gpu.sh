#!/usr/bin/env bash
# Quality benchmark, long variant for one GPU (not run on the 2-core CPU machine).
#
# Same protocol as `python bench/quality.py` (PneumoniaMNIST 28 px, all 4,707 training images, random / di / dir / dira /
# dira_barlow / dira_simsiam, linear probe + kNN + early-stopped fine-tuning at 1 / 10 / 100 % labels, paired bootstrap
# CIs), with a larger budget: 40 pretraining epochs per method (2,920 steps at batch 64; two-stage methods 20 + 20),
# 3 pretraining seeds, 5 random-init seeds, a longer fine-tuning cap with more patience, 10,000 bootstrap resamples.
# Resumable: run it again with the same flags to continue after an interruption. Extra flags are passed on, e.g.
#   bench/quality_gpu.sh --out bench/results/quality_gpu_b   (another results folder)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" bench/quality.py --device cuda --num-workers 6 --pretrain-steps 2920 --seeds 0 1 2 --random-seeds 0 1 2 3 4 --finetune-steps 3000 --eval-every 50 --patience 10 --n-boot 10000 --out bench/results/quality_gpu "$@"
