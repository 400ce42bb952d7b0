#!/usr/bin/env bash
# DIN with behaviour history vs DeepFM without, on MovieLens-1M cs100_half (issue #15): 3 seeds each.
#
#   bash benchmarks/results/model-zoo/din_vs_deepfm.sh              # seeds 0 1 2, every run below
#   MODELS="din_liked wdl" THREADS=2 bash benchmarks/results/model-zoo/din_vs_deepfm.sh 1   # some, seed 1
#
# Runs (one JSON each under movielens1m/, named RUN_collisionless_sSEED.json):
#   din        configs/movielens1m_din.yaml: history of the user's last 50 earlier ratings (any rating,
#              any split: what was rated, never how), history movies on item_id's rows (share_embedding)
#   din_liked  the same with --dataset-option behaviour=liked: the last 50 earlier ratings 4-5 of the
#              training split (DIN's clicks; no validation or test label reaches any input)
#   deepfm     configs/movielens1m_deepfm.yaml, no history
#   wdl        the same preset with --model wdl: DeepFM without its FM term, the MLP base DIN adds
#              attention to
#   din_users, deepfm_users   din and deepfm on the DIN paper's protocol, --dataset-option
#              split_by=user: valid and test users never appear in training (run with MODELS=...)
#   din_liked_users           din_liked on the user split: the user's own earlier ratings 4-5 (all of
#              them: a user's ratings are all in one split, so no label crosses splits)
#   din_cold, deepfm_cold     din_users and deepfm_users without the user_id feature (drop_features=[user_id]): the
#              model cannot lean on a per-user row that held-out users do not have
# From the repository root. Every preset reads the same ratings file with the same split (the movielens
# source's split seed, 0 by default; --seed only seeds training); all collisionless, dim 30, batch 128,
# Adam 2e-4, MLP [200, 80], early stopping on validation AUC (patience 2, learning rate / 10 on each
# plateau, at most 30 epochs). A run whose JSON exists is skipped, so the script resumes; the summary at
# the end prints mean and std per run.
#
# float32 (--no-bf16) for every model, as the zoo's run.sh: at batch 128 bf16 autocast made the DIN
# epoch 1.9x slower (466 s against 245 s of training, measured in an earlier session).
#
# Time, 2026-12-02, 1 torch thread, 2-core Xeon (avx2, avx512_bf16, amx_bf16) shared with one other
# 1-thread training job: DIN 45-78 s of training an epoch (about 1 min wall with its validation pass),
# 10-13 epochs, 10-14 min a run; DeepFM and WDL 10-18 s an epoch, 15-17 epochs, 3-5 min a run. All
# twelve runs: about 1.7 h.
set -euo pipefail
threads=${THREADS:-1}
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(0 1 2)
out=benchmarks/results/model-zoo/movielens1m
mkdir -p "$out"
for seed in "${seeds[@]}"; do
  for run in ${MODELS:-din din_liked deepfm wdl}; do
    json=$out/${run}_collisionless_s${seed}.json
    [ -s "$json" ] && { echo "have $json"; continue; }
    case $run in
      din_liked) preset=din extra=(--dataset-option behaviour=liked) ;;  # history of clicks (training split)
      wdl) preset=deepfm extra=(--model wdl) ;;  # DeepFM without its FM term: the MLP base DIN adds attention to
      din_users | deepfm_users) preset=${run%_users} extra=(--dataset-option split_by=user) ;;  # cold users
      din_liked_users) preset=din extra=(--dataset-option split_by=user --dataset-option behaviour=liked) ;;
      din_cold | deepfm_cold) preset=${run%_cold}
        extra=(--dataset-option split_by=user --dataset-option 'drop_features=["user_id"]') ;;
      *) preset=$run extra=() ;;
    esac
    PYTHONPATH=$PWD /work/main/.venv/bin/featmux train --config configs/movielens1m_${preset}.yaml \
      --data /work/shared/data/movielens-1m --seed "$seed" --threads "$threads" --no-bf16 --no-progress \
      "${extra[@]}" --out "$json"
  done
done
PYTHONPATH=$PWD /work/main/.venv/bin/python - "$out" <<'EOF'
import json, statistics, sys
from pathlib import Path

runs: dict[str, list[dict]] = {}
for p in sorted(Path(sys.argv[1]).glob("*_collisionless_s*.json")):  # preset name: the file's prefix
    runs.setdefault(p.name.split("_collisionless_")[0], []).append(json.loads(p.read_text()))
for preset, mine in runs.items():
    aucs = [r["test_auc"] for r in mine]
    capped = [r["seed"] for r in mine if r["epochs"] >= r["config"]["epochs"]]
    std = statistics.stdev(aucs) if len(aucs) > 1 else float("nan")
    print(
        f"{preset}: test AUC {statistics.mean(aucs):.4f} +- {std:.4f} over seeds {[r['seed'] for r in mine]}"
        + (f"; seeds {capped} stopped by the epoch cap (not converged)" if capped else "")
    )
EOF
