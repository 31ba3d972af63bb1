#!/usr/bin/env python
"""Quality benchmark: pretrain random-init / di / dir / dira (...) under one budget, then compare transfer scores.

Same as `dira-nb benchmark`; writes quality.json and quality.md (command, hardware, budget, tables) into --out
(default bench/results).

  python bench/quality.py                      # the default small budget (see BenchmarkConfig)
  python bench/quality.py --tiny               # plumbing check
  python bench/quality.py --methods random di dir dira dira_barlow --pretrain-steps 400 --seeds 0 1 2
"""
import shlex, sys

from dira_nb.cli import run_benchmark_cli

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(run_benchmark_cli(argv, command=" ".join(["python bench/quality.py", *map(shlex.quote, argv)])))
