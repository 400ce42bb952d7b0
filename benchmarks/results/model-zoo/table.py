"""Print the model-zoo results as markdown: `python benchmarks/results/model-zoo/table.py`.

First the summary (mean ± std over the seeds found, against BARS Frappe_x1, the issue's 0.002 check),
then every run.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

BARS = {"deepfm": 0.9842, "dcnv2": 0.9845, "xdeepfm": 0.9845, "autoint": 0.9848, "finalmlp": 0.9861}
ORDER = list(BARS)

runs = [json.loads(p.read_text()) for p in sorted(Path(__file__).parent.glob("frappe_*.json"))]
groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
for r in runs:
    groups[(r["model"], r["embedding"], str(r["budget"]))].append(r)

print(
    "| model | embedding | budget | seeds | test AUC mean ± std | BARS | mean - BARS | within 0.002 of BARS |"
)
print("|---|---|---|---|---|---|---|---|")
for (model, embedding, budget), rs in sorted(
    groups.items(),
    key=lambda kv: (
        kv[0][1] != "collisionless",
        ORDER.index(kv[0][0]) if kv[0][0] in ORDER else 99,
        kv[0][2],
    ),
):
    aucs = [r["test_auc"] for r in rs]
    mean = statistics.mean(aucs)
    std = statistics.stdev(aucs) if len(aucs) > 1 else float("nan")
    bars = BARS.get(model)
    seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
    if embedding == "collisionless" and bars:
        verdict = ("yes" if mean >= bars - 0.002 else "no") + (
            "" if len(aucs) >= 3 else f" ({len(aucs)} seed(s) only)"
        )
        diff = f"{mean - bars:+.4f}"
    else:
        verdict, diff = "", ""
    print(
        f"| {model} | {embedding} | {budget} | {seeds} | {mean:.4f} ± {std:.4f} | {bars or ''} | {diff} "
        f"| {verdict} |"
    )

print()
print(
    "| model | embedding | budget | seed | test AUC | BARS | diff | test logloss | epochs | stopped by "
    "| bf16 |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    cap = r["config"]["epochs"]
    stop = "early stopping" if r["epochs"] < cap else f"epoch cap {cap} (not converged)"
    bars = BARS.get(r["model"])
    diff = f"{r['test_auc'] - bars:+.4f}" if bars else ""
    bf16 = "on" if (r.get("autocast") or {}).get("bf16") else "off"
    print(
        f"| {r['model']} | {r['embedding']} | {r['budget']} | {r['seed']} | {r['test_auc']:.4f} | "
        f"{bars or ''} | {diff} | {r['test_logloss']:.4f} | {r['epochs']} | {stop} | {bf16} |"
    )
