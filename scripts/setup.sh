#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: .venv with the CPU build of torch 2.13.0, then dira_nb (editable) with its
# dev tools. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install --disable-pip-version-check -q "$@"; }
# torch first and pinned exactly, so nothing later pulls a CUDA build.
pip_install torch==2.13.0
pip_install -e ".[dev]"
if .venv/bin/python -m pip freeze | grep -qiE '^(nvidia-|triton)'; then
  echo "setup: CUDA packages were installed next to torch; dira_nb expects the CPU build (torch==2.13.0+cpu)" >&2
  exit 1
fi
.venv/bin/python -c "import torch, dira_nb; print(f'setup: dira_nb {dira_nb.__version__}, torch {torch.__version__}, ready')"
