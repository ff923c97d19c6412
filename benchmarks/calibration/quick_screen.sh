#!/usr/bin/env bash
# QUICK_PLAN.md's screen (seeds 0-2) or confirmation (`confirm ID`, seeds 10-12), run before
# 44997c5, when quick.yaml was Q-300 (its variants are relative to that file), and
# QUICK_PLAN2.md's (`screen2`, `time2`, `confirm2 ID`: seeds 10-14), relative to quick.yaml =
# Q32-150, and DEFAULT_PLAN.md's (`screen3`, `time3`, `qualify3 ID`: seeds 3-4, `confirm3 ID`,
# `control3 ID`: seeds 10-14), relative to default.yaml = D-600. One calibrate_proxy.py call
# per variant, sequential, rows appended to benchmarks/results/quick_calibration[2].json or
# default_calibration3.json (each row names its variant in `overrides`).
#   bash benchmarks/calibration/quick_screen.sh screen2          # the second screen
#   bash benchmarks/calibration/quick_screen.sh time2            # its speed gate's timings
#   bash benchmarks/calibration/quick_screen.sh confirm2 Q32-100
#   bash benchmarks/calibration/quick_screen.sh screen3 D-300 D-300-u1   # a subset of the third screen
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
CACHE=runs/cache-quickscreen
SPACE=search_spaces/quick.yaml
OUT=benchmarks/results/quick_calibration.json
TIMES=benchmarks/results/quick_screen_times.txt
declare -A VARIANTS=(
  [Q-300]=""
  [Q32-150]="training.steps=150 training.eval_every=50 training.lr=0.004"
  [Q32-100]="training.steps=100 training.eval_every=50 training.lr=0.004"
  [Q48-100]="model.hidden_size=48 model.num_heads=4 model.num_kv_heads=2 model.intermediate_size=96 training.steps=100 training.eval_every=50 training.lr=0.004"
  [Q32-100-u1]="training.steps=100 training.eval_every=50 training.lr=0.004 training.loss_weights={understanding: 1.0, generation: 1.0}"
)
IDS=(Q-300 Q32-150 Q32-100 Q48-100 Q32-100-u1)
U1="training.loss_weights={understanding: 1.0, generation: 1.0}"
declare -A VARIANTS2=(  # QUICK_PLAN2.md, relative to quick.yaml = Q32-150
  [Q32-150]=""
  [Q32-100]="training.steps=100"
  [Q32-100-u1]="training.steps=100 $U1"
  [Q32-120-u1]="training.steps=120 training.eval_every=40 $U1"
)
IDS2=(Q32-150 Q32-100 Q32-100-u1 Q32-120-u1)
D3="data.val_size=100 training.lr=0.004"
declare -A VARIANTS3=(  # DEFAULT_PLAN.md, relative to default.yaml = D-600
  [D-600]=""
  [D-300]="training.steps=300 training.eval_every=100 $D3"
  [D-300-u1]="training.steps=300 training.eval_every=100 $D3 $U1"
  [D-240-u1]="training.steps=240 training.eval_every=80 $D3 $U1"
)
IDS3=(D-600 D-300 D-300-u1 D-240-u1)
use_screen() {  # use_screen N: the Nth screen's variants and ids become VARIANTS and IDS
  local -n table=VARIANTS$1 ids=IDS$1
  local k
  unset VARIANTS; declare -gA VARIANTS; for k in "${!table[@]}"; do VARIANTS[$k]=${table[$k]}; done
  IDS=("${ids[@]}")
}
if [[ "${1:-}" == *2 ]]; then  # the second screen: its variants, its files
  use_screen 2; OUT=benchmarks/results/quick_calibration2.json; TIMES=benchmarks/results/quick_screen2_times.txt
elif [[ "${1:-}" == *3 ]]; then  # the default's screen
  use_screen 3; OUT=benchmarks/results/default_calibration3.json; TIMES=benchmarks/results/default_screen3_times.txt
  SPACE=search_spaces/default.yaml; CACHE=runs/cache-defaultscreen
fi
sets_of() {  # sets_of ID -> SETS (the variant's --set arguments)
  SETS=(--set "cache_dir=$CACHE" --set "name=$1")
  local kv kvs
  IFS=$'\n' read -r -d '' -a kvs < <(echo "${VARIANTS[$1]}" | sed 's/ \([a-z_]*\.[a-z_.]*=\)/\n\1/g' && printf '\0') || true
  for kv in "${kvs[@]}"; do [ -n "$kv" ] && SETS+=(--set "$kv"); done
}
run() {  # run ID SEEDS [EXTRA calibrate_proxy ARGS]
  sets_of "$1"
  echo "== $1 seeds $2: ${SETS[*]}"
  "$PY" benchmarks/calibrate_proxy.py "$SPACE" "${SETS[@]}" "${@:3}" --seeds "$2" --out "$OUT" > /dev/null
}
timed() {  # timed ID: the joint run's seconds of the dense trial, seed 0 (baselines cached by the screen)
  sets_of "$1"
  local args=() i
  for ((i = 4; i < ${#SETS[@]}; i += 2)); do args+=(--set "${SETS[i+1]}"); done  # not cache_dir, name
  "$(dirname "$PY")/searchvlm" trial "$SPACE" --preset dense --seeds 0 --json \
    --cache-dir "$CACHE" "${args[@]}" \
    | "$PY" -c "import json,sys; print('$1', round(json.load(sys.stdin)['train_seconds'], 2))"
}
passes() {  # passes N: every variant N times, interleaved, the load average logged before each pass
  local pass id
  for ((pass = 1; pass <= $1; pass++)); do
    echo "# pass $pass, $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    for id in "${IDS[@]}"; do timed "$id"; done
  done | tee -a "$TIMES"
}
case "${1:-screen}" in
  confirm) run "$2" 10,11,12 ;;
  confirm2) run "$2" 10,11,12,13,14 ;;
  time) passes 2 ;;
  time2) passes 3 ;;
  screen | screen2) for id in "${IDS[@]}"; do run "$id" 0,1,2; done ;;
  screen3) shift; ids=("$@"); [ ${#ids[@]} -gt 0 ] || ids=(D-300 D-300-u1 D-240-u1); for id in "${ids[@]}"; do run "$id" 0,1,2; done ;;
  time3) passes 3 ;;
  # without default.yaml's vs_dense reference (a second dense joint run no gain reads; screen3 ran it)
  qualify3) run "$2" 3,4 --set synergy.vs_dense=false ;;
  confirm3) run "$2" 10,11,12,13,14 --set synergy.vs_dense=false ;;
  control3) run "$2" 10,11,12,13,14 --set synergy.vs_dense=false --set data.permute_answers=true ;;
esac
