"""Print the model-zoo results as markdown: `python benchmarks/results/model-zoo/table.py`.

First the summary (mean ± std over the seeds found, against BARS Frappe_x1, the issue's 0.002 check, and
each compressed row against the same model's collisionless mean), then every run. DCN-v2's rows come
from the Frappe Pareto grid (`benchmarks/results/frappe-pareto`, the same preset as
`configs/frappe_dcnv2.yaml`), the other models' from this folder's `run.sh` JSONs.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

BARS = {"deepfm": 0.9842, "dcnv2": 0.9845, "xdeepfm": 0.9845, "autoint": 0.9848, "finalmlp": 0.9861}
ORDER = list(BARS)
HERE = Path(__file__).parent
GRID = HERE.parent / "frappe-pareto" / "cells"
GRID_CELLS = ("frappe__dcnv2__collisionless__1__seed*.json", "frappe__dcnv2__unified__1-16__seed*.json")


def load_runs() -> list[tuple[str, dict]]:
    """(source, result) for every run: this folder's JSONs, then DCN-v2's grid cells."""
    runs = [("run.sh", json.loads(p.read_text())) for p in sorted(HERE.glob("frappe_*.json"))]
    for pattern in GRID_CELLS:
        runs += [("frappe-pareto", json.loads(p.read_text())) for p in sorted(GRID.glob(pattern))]
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


runs = load_runs()
groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
for _, r in runs:
    groups[(r["model"], r["embedding"], str(r["budget"]))].append(r)
collisionless = {
    m: mean_std([r["test_auc"] for r in rs])[0] for (m, e, _), rs in groups.items() if e == "collisionless"
}

print(
    "| model | embedding | budget | seeds | test AUC mean ± std | BARS | mean - BARS | within 0.002 of BARS "
    "| mean - collisionless |"
)
print("|---|---|---|---|---|---|---|---|---|")
for (model, embedding, budget), rs in sorted(
    groups.items(),
    key=lambda kv: (
        kv[0][1] != "collisionless",
        ORDER.index(kv[0][0]) if kv[0][0] in ORDER else 99,
        kv[0][2],
    ),
):
    mean, std = mean_std([r["test_auc"] for r in rs])
    spread = f"± {std:.4f}" if len(rs) > 1 else "(1 seed)"
    bars = BARS.get(model)
    seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
    verdict, diff, drop = "", "", ""
    if embedding == "collisionless" and bars:
        verdict = ("yes" if mean >= bars - 0.002 else "no") + (
            "" if len(rs) >= 3 else f" ({len(rs)} seed(s) only)"
        )
        diff = f"{mean - bars:+.4f}"
    elif model in collisionless:
        drop = f"{mean - collisionless[model]:+.4f}"
    print(
        f"| {model} | {embedding} | {budget} | {seeds} | {mean:.4f} {spread} | {bars if diff else ''} "
        f"| {diff} | {verdict} | {drop} |"
    )

print()
print(
    "| model | embedding | budget | seed | test AUC | BARS | diff | test logloss | epochs | stopped by "
    "| bf16 | source |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for source, r in runs:
    cap = r["config"]["epochs"]
    stop = "early stopping" if r["epochs"] < cap else f"epoch cap {cap} (not converged)"
    bars = BARS.get(r["model"])
    diff = f"{r['test_auc'] - bars:+.4f}" if bars else ""
    bf16 = "on" if (r.get("autocast") or {}).get("bf16") else "off"
    print(
        f"| {r['model']} | {r['embedding']} | {r['budget']} | {r['seed']} | {r['test_auc']:.4f} | "
        f"{bars or ''} | {diff} | {r['test_logloss']:.4f} | {r['epochs']} | {stop} | {bf16} | {source} |"
    )
