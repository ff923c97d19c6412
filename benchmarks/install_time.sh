#!/usr/bin/env bash
# The install (docs/guide.md, install by hand) with and without pip's byte-compilation, side by side (issue 23):
# two fresh venvs installed at the same time (same machine load), each step timed, then the
# first import of what a sweep needs (where --no-compile pays its deferred compilation).
#   bash benchmarks/install_time.sh [WORKDIR]   -> one line per venv, appended to benchmarks/results/install_time.txt
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d)}
one() {  # one NAME "PIP FLAGS"
  local dir=$WORK/$1 s p t d i
  python3.11 -m venv "$dir/.venv"
  s=$(date +%s.%N); "$dir/.venv/bin/pip" install -q --upgrade pip $2 >/dev/null 2>&1
  p=$(date +%s.%N); "$dir/.venv/bin/pip" install -q torch==2.13.0 $2 >/dev/null 2>&1
  t=$(date +%s.%N); "$dir/.venv/bin/pip" install -q $2 -e "$ROOT[dev]" >/dev/null 2>&1
  d=$(date +%s.%N); "$dir/.venv/bin/python" -c "import torch, ray, mlflow, transformers, optuna, sklearn, searchvlm.cli"
  i=$(date +%s.%N)
  printf '%s pip-upgrade %.0f torch %.0f deps %.0f first-import %.0f total %.0f s\n' "$1" \
    "$(echo "$p-$s" | bc)" "$(echo "$t-$p" | bc)" "$(echo "$d-$t" | bc)" "$(echo "$i-$d" | bc)" "$(echo "$i-$s" | bc)"
}
one compile "" > "$WORK/compile.log" &
one no-compile "--no-compile" > "$WORK/no-compile.log" &
wait
cat "$WORK/compile.log" "$WORK/no-compile.log" | tee -a "$ROOT/benchmarks/results/install_time.txt"
