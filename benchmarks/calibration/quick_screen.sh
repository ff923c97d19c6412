#!/usr/bin/env bash
# QUICK_PLAN.md's screen (seeds 0-2) or confirmation (`confirm ID`, seeds 10-12): one
# calibrate_proxy.py call per variant, sequential (the speed gate compares their times), rows
# appended to benchmarks/results/quick_calibration.json (each row names its variant in `overrides`).
#   bash benchmarks/calibration/quick_screen.sh            # the screen
#   bash benchmarks/calibration/quick_screen.sh confirm Q48-150
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/quick_calibration.json
declare -A VARIANTS=(
  [Q-300]=""
  [Q32-150]="training.steps=150 training.eval_every=50 training.lr=0.004"
  [Q48-150]="model.hidden_size=48 model.num_heads=4 model.num_kv_heads=2 model.intermediate_size=96 training.steps=150 training.eval_every=50 training.lr=0.004"
  [Q64-150]="model.hidden_size=64 model.num_heads=4 model.num_kv_heads=2 model.intermediate_size=128 training.steps=150 training.eval_every=50 training.lr=0.004"
  [Q48-150-u1]="model.hidden_size=48 model.num_heads=4 model.num_kv_heads=2 model.intermediate_size=96 training.steps=150 training.eval_every=50 training.lr=0.004 training.loss_weights={understanding: 1.0, generation: 1.0}"
)
run() {  # run ID SEEDS
  local sets=(--set "cache_dir=runs/cache-quickscreen" --set "name=$1")
  local kv
  IFS=$'\n' read -r -d '' -a kvs < <(echo "${VARIANTS[$1]}" | sed 's/ \([a-z_]*\.[a-z_.]*=\)/\n\1/g' && printf '\0') || true
  for kv in "${kvs[@]}"; do [ -n "$kv" ] && sets+=(--set "$kv"); done
  echo "== $1 seeds $2: ${sets[*]}"
  "$PY" benchmarks/calibrate_proxy.py search_spaces/quick.yaml "${sets[@]}" --seeds "$2" --out "$OUT" > /dev/null
}
if [ "${1:-}" = confirm ]; then
  run "$2" 10,11,12
else
  for id in Q-300 Q32-150 Q48-150 Q64-150 Q48-150-u1; do run "$id" 0,1,2; done
fi
