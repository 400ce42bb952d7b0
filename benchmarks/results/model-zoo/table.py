"""Print the model-zoo results as a markdown table: `python benchmarks/results/model-zoo/table.py`."""

from __future__ import annotations

import json
from pathlib import Path

BARS = {"deepfm": 0.9842, "dcnv2": 0.9845, "xdeepfm": 0.9845, "autoint": 0.9848, "finalmlp": 0.9861}

print("| model | embedding | budget | seed | test AUC | BARS | diff | test logloss | epochs | stopped by |")
print("|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(Path(__file__).parent.glob("*.json")):
    r = json.loads(path.read_text())
    cap = r["config"]["epochs"]
    stop = "early stopping" if r["epochs"] < cap else f"epoch cap {cap} (not converged)"
    bars = BARS.get(r["model"])
    diff = f"{r['test_auc'] - bars:+.4f}" if bars else ""
    print(
        f"| {r['model']} | {r['embedding']} | {r['budget']} | {r['seed']} | {r['test_auc']:.4f} | "
        f"{bars or ''} | {diff} | {r['test_logloss']:.4f} | {r['epochs']} | {stop} |"
    )
