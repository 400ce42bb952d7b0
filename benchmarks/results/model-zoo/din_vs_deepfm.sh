#!/usr/bin/env bash
# DIN with behaviour history vs DeepFM without, on MovieLens-1M cs100_half (issue #15): 3 seeds each.
#
#   bash benchmarks/results/model-zoo/din_vs_deepfm.sh            # seeds 0 1 2, both models
#   THREADS=2 bash benchmarks/results/model-zoo/din_vs_deepfm.sh 1 # one seed, 2 torch threads
#
# From the repository root. Both presets read the same ratings file with the same split (the movielens
# source's split seed, 0 by default; --seed only seeds training): configs/movielens1m_din.yaml (history
# of 50, history movies on item_id's rows: share_embedding) and configs/movielens1m_deepfm.yaml (no
# history), both collisionless, dim 30, batch 128, Adam 2e-4, MLP [200, 80], early stopping on
# validation AUC (patience 2, learning rate / 10 on each plateau, at most 30 epochs). A run whose JSON
# exists is skipped, so the script resumes; the summary at the end prints mean and std per model.
#
# float32 (--no-bf16) for both models, as the zoo's run.sh: at batch 128 bf16 autocast made the DIN
# epoch 1.9x slower here (466 s against 245 s of training).
#
# Time, measured for DIN only (1 torch thread, float32, encoded data cached): one epoch (288,373
# training rows, 2,253 steps) took 245 s of training (1,176 rows/s), 5.1 min wall with loading and the
# validation pass; on the 2-core Xeon (avx2, avx512_bf16, amx_bf16) shared with other jobs (load
# average 8.0 -> 8.2: a contended figure); encoding the splits once took 22 s more. A DIN run trains
# until early stopping (at most 30 epochs): about 5 min x its epochs, so 40 min for 8 epochs and at most
# 2.6 h a seed. DeepFM, same conditions: 34 s of training an epoch (8,415 rows/s), 1 min wall with its
# own encoding (no history), so at most 30 min a seed. All six runs: about 2.5 h to 9 h.
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
