"""Print the MovieLens-1M DIN-vs-DeepFM tables as markdown.

    python benchmarks/results/model-zoo/din_table.py


One table per split protocol (by rating, by user), from the JSONs `din_vs_deepfm.sh` writes under
`movielens1m/`; each row against the DeepFM run of the same split.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent / "movielens1m"
# run name -> what it is; in table order, per split protocol, DeepFM first (the reference)
RUNS = {
    "by rating (split seed 0)": {
        "deepfm": "DeepFM, no history",
        "wdl": "WDL (DeepFM without its FM term), no history",
        "din_liked": "DIN, history of liked movies (training split)",
        "din": "DIN, history of rated movies",
    },
    "by user (split seed 0)": {
        "deepfm_users": "DeepFM, no history",
        "din_liked_users": "DIN, history of liked movies (the user's own earlier 4-5)",
        "din_users": "DIN, history of rated movies",
        "deepfm_cold": "DeepFM, no history, no user_id",
        "din_cold": "DIN, history of rated movies, no user_id",
    },
}


def main() -> None:
    for protocol, runs in RUNS.items():
        print(f"Split {protocol}:\n")
        print("| run | model | seeds | test AUC per seed | mean ± std | - DeepFM | epochs (cap 30) |")
        print("|---|---|---|---|---|---|---|")
        reference = None
        for run, what in runs.items():
            results = [json.loads(p.read_text()) for p in sorted(HERE.glob(f"{run}_collisionless_s*.json"))]
            if not results:
                continue
            aucs = [r["test_auc"] for r in results]
            mean = statistics.mean(aucs)
            std = f" ± {statistics.stdev(aucs):.4f}" if len(aucs) > 1 else " (1 seed)"
            reference = mean if reference is None else reference
            epochs = ", ".join(
                f"{r['epochs']:.0f}" + ("*" if r["epochs"] >= r["config"]["epochs"] else "") for r in results
            )
            seeds, per_seed = ",".join(str(r["seed"]) for r in results), " / ".join(f"{a:.4f}" for a in aucs)
            print(
                f"| {run} | {what} | {seeds} | {per_seed} | {mean:.4f}{std} | "
                f"{mean - reference:+.4f} | {epochs} |"
            )
        print("\n(* = stopped by the epoch cap, not by early stopping)\n")


if __name__ == "__main__":
    main()
