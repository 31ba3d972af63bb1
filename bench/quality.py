#!/usr/bin/env python
"""Quality benchmark on real chest X-rays: can the table settle random < di ≤ dir ≤ dira?

Pretrains random-init / di / dir / dira / dira_barlow / dira_simsiam on all PneumoniaMNIST training images (28 px,
equal steps per method, `pretrain` defaults), over several seeds, then scores every (method, seed) unit with a linear
probe, kNN and early-stopped fine-tuning at 1 / 10 / 100 % labels on the official test split, and reports mean ± std
and paired bootstrap 95 % CIs of dira − di, dir − di, dira − dir and di − random. Same as `dira-nb benchmark`.

Writes into --out (default bench/results/quality): units/<dataset>/<method>_seed<seed>.json (one per finished unit),
runs/ (the pretraining run folders), progress.log, quality.json, quality.md and loss_curves_<dataset>.png. Re-running
the same command skips finished units (an interrupted run resumes at the unit it was in).

  python bench/quality.py                         # the default budget: about 50 min on 2 quiet CPU cores
  python bench/quality.py --threads 1             # on a machine shared with other jobs (2 threads would spin)
  python bench/quality.py --tiny --out /tmp/q     # plumbing check, seconds
  python bench/quality.py --methods random di dira ld ace   # LD and ACE are optional; all methods share --backbone
  bench/quality_gpu.sh                            # the long GPU variant
"""
import shlex, sys

from dira_nb.cli import run_benchmark_cli

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(run_benchmark_cli(argv, command=" ".join(["python bench/quality.py", *map(shlex.quote, argv)])))
