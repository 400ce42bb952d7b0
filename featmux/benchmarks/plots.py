"""Pareto plots: embedding bytes (log x, `memory_bytes()`) against test AUC, one figure per dataset x model.

Each budgeted method is a line through its budgets with seed-std error bars; the collisionless table
(fixed size) is one point with error bars and a dashed horizontal reference at its mean AUC. Every
method gets its own colour and marker (a zoo grid has ~20 methods, more than one colour cycle), with
the legend outside the axes. Drawn with matplotlib's Agg canvas directly (no pyplot state, no display
needed).

Example:
    >>> pareto_plots(aggregate(load_results("runs/frappe")), "runs/frappe/report")
    [PosixPath('runs/frappe/report/pareto_frappe_dcnv2.png')]
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from featmux.benchmarks.report import ReportRow, _method_rank

MARKERS = ("o", "^", "s", "D", "v", "P", "X", "<", ">", "*")


def method_styles(methods: Sequence[str]) -> dict[str, tuple[tuple[float, ...], str]]:
    """A distinct (colour, marker) per method, in the given order: tab20's colours, then markers cycle."""
    colours = colormaps["tab20"].colors
    return {
        m: (tuple(colours[i % len(colours)]), MARKERS[(i // len(colours) + i) % len(MARKERS)])
        for i, m in enumerate(methods)
    }


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text)


def pareto_figure(rows: Sequence[ReportRow], title: str) -> Figure:
    """The Pareto figure of one dataset x model (`rows` of that group only)."""
    by_method: dict[str, list[ReportRow]] = defaultdict(list)
    for r in rows:
        if r.test_auc.mean is not None:
            by_method[r.method].append(r)
    methods = sorted(by_method, key=_method_rank)
    styles = method_styles(methods)
    fig = Figure(figsize=(8.8 if len(methods) > 6 else 6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    crowded = len(methods) > 6  # budgets labelled once along the top, the legend beside the axes
    budget_x: dict[str, list[float]] = defaultdict(list)
    for method in methods:
        rs = sorted(by_method[method], key=lambda r: r.embedding_bytes)
        xs = [r.embedding_bytes for r in rs]
        ys = [r.test_auc.mean for r in rs]
        errs = [r.test_auc.std or 0.0 for r in rs]
        colour, marker = styles[method]
        if rs[0].embedding == "collisionless":
            ax.errorbar(xs, ys, yerr=errs, fmt="s", color=colour, capsize=4, label=method, zorder=3)
            for y in ys:
                ax.axhline(y, linestyle="--", linewidth=1, color=colour, alpha=0.7)
        else:
            ax.errorbar(xs, ys, yerr=errs, fmt=f"{marker}-", color=colour, capsize=3, label=method)
            for r, x, y in zip(rs, xs, ys, strict=True):
                budget_x[r.budget].append(x)
                if not crowded:
                    ax.annotate(r.budget, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    if crowded:
        for budget, xs in budget_x.items():
            x = sorted(xs)[len(xs) // 2]
            ax.annotate(budget, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=8)  # fmt: skip
    ax.set_xlabel("embedding bytes stored (memory_bytes(), log scale)")
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.set_title(title, pad=14 if crowded else 6)
    ax.grid(True, which="both", alpha=0.3)
    if crowded:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    else:
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
