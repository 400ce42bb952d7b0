#!/usr/bin/env bash
# One run at a time: `[THREADS=N] bash benchmarks/results/model-zoo/run.sh MODEL EMBEDDING SEED [BUDGET]`
# from the repo root (2 torch threads unless THREADS says otherwise).
set -euo pipefail
# float32 (--no-bf16): the committed seed-0 runs predate bf16 autocast, so every seed of the table is fp32.
model=$1 embedding=$2 seed=$3 budget=${4:-}
out=benchmarks/results/model-zoo/frappe_${model}_${embedding}${budget:+_${budget/\//-}}_s${seed}.json
extra=()
[ -n "$budget" ] && extra=(--embedding "$embedding" --budget "$budget")
PYTHONPATH=$PWD /work/main/.venv/bin/featmux train --config configs/frappe_${model}.yaml \
  --data /work/shared/data/frappe --seed "$seed" --threads "${THREADS:-2}" --no-bf16 --no-progress "${extra[@]}" --out "$out"
