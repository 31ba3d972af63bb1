#!/usr/bin/env bash
# All tests: notebooks and package in sync, every notebook's assertions (nbdev-test), and the pytest layer.
# Run after scripts/setup.sh. Fails loudly on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
fail() { echo "TESTS FAILED: $*" >&2; exit 1; }

echo "== 1/3 nbdev-export leaves no diff (notebooks in nbs/ are the source of dira_nb/)"
nbdev-export
if ! git diff --quiet -- dira_nb || [ -n "$(git status --porcelain --untracked-files=all -- dira_nb | grep -v __pycache__ || true)" ]; then
  git status --short -- dira_nb; git diff --stat -- dira_nb
  fail "dira_nb/ differs from what nbdev-export makes of nbs/: edit the notebooks, export, commit both"
fi

echo "== 2/3 notebook assertions (nbdev-test)"
nbdev-test --n-workers 2 --timing || fail "a notebook's assertions failed (see above)"

echo "== 3/3 pytest"
set +e
python -m pytest -q "$@"
rc=$?
set -e
[ $rc -eq 5 ] && fail "pytest collected no tests"
[ $rc -ne 0 ] && fail "pytest exited with $rc"
echo "ALL TESTS PASSED"
