#!/usr/bin/env bash
# What the Makefile's compileall step saves where PYTHONDONTWRITEBYTECODE=1 (this machine, CI):
# Python then never writes the .pyc it compiles, so without compiled site-packages every new
# process compiles torch, transformers, ray, mlflow... from source again. "without" points
# PYTHONPYCACHEPREFIX (inherited by every subprocess: Ray workers too) at an empty folder, so
# no .pyc is found; "with" reads the venv's. Pairs alternate, on the same machine load.
#   bash benchmarks/bytecode_imports.sh [PAIRS]  -> appended to benchmarks/results/bytecode_imports.txt
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
PAIRS=${1:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONDONTWRITEBYTECODE=1
PYTHONPATH=$ROOT/tests "$PY" -c "from pathlib import Path; from helpers.sweeps import tiny_space; \
tiny_space(Path('$WORK/tiny.yaml'), samples=4, steps=20)"
secs() {  # secs WITH|WITHOUT CMD...: wall seconds of CMD; a failing CMD stops the benchmark (no time for it)
  local s e rc=0
  s=$(date +%s.%N)
  if [ "$1" = without ]; then shift; PYTHONPYCACHEPREFIX=$(mktemp -d -p "$WORK") "$@" >"$WORK/last.log" 2>&1 || rc=$?
  else shift; "$@" >"$WORK/last.log" 2>&1 || rc=$?; fi
  e=$(date +%s.%N)
  if [ "$rc" -ne 0 ]; then echo "bytecode_imports.sh: '$*' exited $rc:" >&2; tail -5 "$WORK/last.log" >&2; return "$rc"; fi
  echo "$e - $s" | bc
}
out=$ROOT/benchmarks/results/bytecode_imports.txt
load=$(cut -d' ' -f1 /proc/loadavg)
echo "# $(date -u +%F) $(nproc) cores, load $load: import searchvlm.train.trial; a tiny 4-trial sweep" >>"$out"
for i in $(seq "$PAIRS"); do
  for mode in without with; do
    imp=$(secs $mode "$PY" -c "import searchvlm.train.trial") || exit 1
    rm -rf "$WORK/runs"
    swp=$(secs $mode "$ROOT/.venv/bin/searchvlm" sweep "$WORK/tiny.yaml" --name b --runs-dir "$WORK/runs" --no-progress) || exit 1
    printf 'pair %d %-7s import %.1f s  sweep %.1f s\n' "$i" "$mode" "$imp" "$swp" | tee -a "$out"
  done
done
