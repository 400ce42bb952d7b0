"""Progressive-validation results as a Markdown table and a plot, and a benchmark's report files."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featmux.training.online.results import OnlineResult, PartitionResult


def _arm(result: OnlineResult) -> str:
    if result.embedding == "collisionless":
        return "collisionless (frozen vocab)"
    return f"{result.label or result.embedding} @ {result.budget}"


def _seeded(results: Sequence[OnlineResult]) -> bool:
    return len({r.config.get("seed") for r in results}) > 1


def _label(result: OnlineResult, seeded: bool = False) -> str:
    return f"{_arm(result)} s{result.config.get('seed')}" if seeded else _arm(result)


def seed_summary(results: Sequence[OnlineResult]) -> str:
    """A Markdown table: each arm's mean progressive AUC over its seeds (mean ± std), bytes and speed.

    Args:
        results: runs over the same stream (several seeds per arm).

    Returns:
        The table; "" when every run has the same seed.
    """
    if not _seeded(results):
        return ""
    groups: dict[str, list[OnlineResult]] = {}
    for r in results:
        groups.setdefault(_arm(r), []).append(r)
    lines = [
        "| arm | seeds | mean progressive AUC (mean ± std over seeds) | embedding bytes | training rows/s |",
        "|---|---|---|---|---|",
    ]
    for arm, runs in groups.items():
        aucs = np.array([r.mean_auc() for r in runs])
        spread = f" ± {aucs.std(ddof=1):.4f}" if len(runs) > 1 else ""
        size = runs[0].embedding_bytes
        lines.append(
            f"| {arm} | {', '.join(str(r.config.get('seed')) for r in runs)} | {aucs.mean():.4f}{spread} | "
            f"{'n/a' if size is None else f'{size:,}'} | "
            f"{np.mean([r.samples_per_second for r in runs]):,.0f} |"
        )
    return "\n".join(lines)


def progressive_table(results: Sequence[OnlineResult]) -> str:
    """A Markdown table: progressive AUC per partition (rows) and method (columns), then summaries.

    Args:
        results: runs over the same stream.

    Returns:
        The table; the first partition (scored by an untrained model) is marked, and the mean leaves
        out the vocabulary partitions.
    """
    if not results:
        return ""
    first = results[0]
    seeded = _seeded(results)
    head = ["partition", "name", "rows", "unseen values", *(_label(r, seeded) for r in results)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    warmup = int(first.config.get("vocabulary_partitions", 1))
    for i, part in enumerate(first.partitions):
        aucs = [f"{r.partitions[i].auc:.4f}" if i < len(r.partitions) else "" for r in results]
        mark = " (vocabulary)" if i < warmup else ""
        lines.append(
            f"| {i}{mark} | {part.name} | {part.rows:,} | {part.unseen_share:.1%} | "
            + " | ".join(aucs)
            + " |"
        )
    blank = "| | | |"
    lines.append(
        f"| **mean AUC, partitions {warmup}+** {blank} "
        + " | ".join(f"**{r.mean_auc():.4f}**" for r in results)
        + " |"
    )
    tail = max(1, len(first.partitions) // 4)
    lines.append(
        f"| mean AUC, last {tail} partitions {blank} "
        + " | ".join(f"{r.mean_auc(len(r.partitions) - tail):.4f}" for r in results)
        + " |"
    )
    lines.append(
        f"| embedding parameters {blank} " + " | ".join(f"{r.embedding_params:,}" for r in results) + " |"
    )
    if any(r.embedding_bytes is not None for r in results):
        lines.append(
            f"| embedding bytes, served {blank} "
            + " | ".join("-" if r.embedding_bytes is None else f"{r.embedding_bytes:,}" for r in results)
            + " |"
        )
    lines.append(
        f"| training rows/s {blank} " + " | ".join(f"{r.samples_per_second:,.0f}" for r in results) + " |"
    )
    return "\n".join(lines)


def plot_progressive(results: Sequence[OnlineResult], path: str | Path, title: str) -> Path:
    """Plot progressive AUC per partition for each run, above the share of unseen values.

    Args:
        results: runs over the same stream.
        path: the PNG to write.
        title: the figure title.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    seeded = _seeded(results)
    for r in results:
        x = [p.index for p in r.partitions]
        top.plot(
            x,
            [p.auc for p in r.partitions],
            marker="o",
            markersize=3,
            label=f"{_label(r, seeded)} ({r.embedding_params:,} params)",
        )
    warmup = int(results[0].config.get("vocabulary_partitions", 1)) if results else 1
    for axis in (top, bottom):
        axis.axvspan(-0.5, warmup - 0.5, color="0.92", zorder=0)
    top.text(-0.45, 0.9, "vocab.\nuntrained", transform=top.get_xaxis_transform(), fontsize=7)
    top.set_ylabel("progressive AUC (before training on it)")
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    top.set_title(textwrap.fill(title, 110), fontsize=9)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    aucs = [p.auc for r in results for p in r.partitions[warmup:] if not math.isnan(p.auc)]
    if aucs:
        low, high = min(aucs), max(aucs)
        top.set_ylim(low - 0.1 * (high - low + 0.01), high + 0.1 * (high - low + 0.01))
    if results:
        parts = results[0].partitions
        bottom.bar([p.index for p in parts], [100 * p.unseen_share for p in parts], color="0.6")
    bottom.set_ylabel("% values unseen\nin frozen vocab")
    bottom.set_xlabel("partition (time order)")
    bottom.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_online_results(path: str | Path) -> tuple[dict[str, Any], list[OnlineResult]]:
    """Read a benchmark's `<name>.json` back: (its JSON, the results without models).

    Args:
        path: the file `run_online_benchmark` wrote.
    """
    data = json.loads(Path(path).read_text())
    results = []
    for entry in data["results"]:
        values = {f.name: entry[f.name] for f in dataclasses.fields(OnlineResult) if f.name in entry}
        values["partitions"] = tuple(PartitionResult(**p) for p in entry["partitions"])
        results.append(OnlineResult(**values))
    return data, results


def write_online_report(path: str | Path) -> tuple[Path, Path]:
    """Write `<name>.md` (table) and `<name>.png` (plot) beside a benchmark's `<name>.json`.

    Args:
        path: the JSON `run_online_benchmark` wrote.

    Returns:
        The table and plot paths.
    """
    path = Path(path)
    data, results = load_online_results(path)
    bench, env = data["benchmark"], data["environment"]
    description = bench.get("description", "").strip()
    seconds = [entry.get("wall_seconds", math.nan) for entry in data["results"]]
    seeded = _seeded(results)
    runs = ", ".join(f"{_label(r, seeded)} {t:.0f} s" for r, t in zip(results, seconds, strict=True))
    summary = seed_summary(results)
    if summary:
        summary = f"Over seeds (each run's mean over the partitions after the vocabulary):\n\n{summary}\n\n"
    table_path = path.with_suffix(".md")
    table_path.write_text(
        f"# {bench['name']}\n\n{description}\n\n"
        "Progressive validation: each partition is scored by the model trained on the partitions before "
        "it, then trained on. Partition 0 is scored by the untrained model and is left out of the means.\n\n"
        f"{progressive_table(results)}\n\n{summary}"
        f"Produced by `{data.get('command', 'run_online_benchmark')}` "
        f"(torch {env['torch']}, {env['threads']} thread(s), {env['cpu']}, {env['cores']} cores); "
        f"wall time per run: {runs}.\n"
    )
    title = f"{bench['name']}: {description.splitlines()[0] if description else ''}"
    return table_path, plot_progressive(results, path.with_suffix(".png"), title)
