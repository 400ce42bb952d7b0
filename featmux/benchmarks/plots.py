"""Pareto plots: embedding bytes (log x, `memory_bytes()`) against test AUC, one figure per dataset x model.

Each budgeted method is a line through its budgets with seed-std error bars; the collisionless table
(fixed size) is one point with error bars and a dashed horizontal reference at its mean AUC. Drawn
with matplotlib's Agg canvas directly (no pyplot state, no display needed).

Example:
    >>> pareto_plots(aggregate(load_results("runs/frappe")), "runs/frappe/report")
    [PosixPath('runs/frappe/report/pareto_frappe_dcnv2.png')]
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from featmux.benchmarks.report import ReportRow, _method_rank


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text)


def pareto_figure(rows: Sequence[ReportRow], title: str) -> Figure:
    """The Pareto figure of one dataset x model (`rows` of that group only)."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    by_method: dict[str, list[ReportRow]] = defaultdict(list)
    for r in rows:
        if r.test_auc.mean is not None:
            by_method[r.method].append(r)
    for method in sorted(by_method, key=_method_rank):
        rs = sorted(by_method[method], key=lambda r: r.embedding_bytes)
        xs = [r.embedding_bytes for r in rs]
        ys = [r.test_auc.mean for r in rs]
        errs = [r.test_auc.std or 0.0 for r in rs]
        if rs[0].embedding == "collisionless":
            bar = ax.errorbar(xs, ys, yerr=errs, fmt="s", capsize=4, label=method, zorder=3)
            for y in ys:
                ax.axhline(y, linestyle="--", linewidth=1, color=bar.lines[0].get_color(), alpha=0.7)
        else:
            ax.errorbar(xs, ys, yerr=errs, fmt="o-", capsize=3, label=method)
            for r, x, y in zip(rs, xs, ys, strict=True):
                ax.annotate(r.budget, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes stored (memory_bytes(), log scale)")
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def pareto_plots(rows: Sequence[ReportRow], out_dir: str | Path) -> list[Path]:
    """Write `pareto_<dataset>_<model>.png` for every dataset x model with test AUCs; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[ReportRow]] = defaultdict(list)
    for r in rows:
        groups[r.group].append(r)
    paths = []
    for (dataset, model), rs in sorted(groups.items()):
        if all(r.test_auc.mean is None for r in rs):
            continue
        fig = pareto_figure(rs, f"{dataset} / {model}")
        path = out / f"pareto_{_safe(dataset)}_{_safe(model)}.png"
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths
