"""Aggregate benchmark results: a Markdown table, a CSV, Pareto plots, a claim check and verdicts.

One row per dataset x model x method x budget, with mean ± std over seeds (std is the sample standard
deviation, ddof = 1; undefined for a single seed) of test AUC and logloss, train time and samples/s,
next to the embedding parameters and bytes. The report says which variance the ± is: over
initialization seeds on one data split, over split seeds, or both (`variance_source`), and marks the
cells that stopped at their epoch (or step) cap instead of by early stopping (column `at cap`): their
numbers may still have been improving. The claim check compares, per dataset and model, Unified
Embedding with per-feature hashing at each budget: the gap in mean test AUC, whether it exceeds the
pooled seed std sqrt((s_u^2 + s_h^2) / 2), and whether it widens as the budget shrinks (the paper's
claim, Coleman et al. 2023, Table 1). Each row also gives the served model's inference time on one
held-out batch of `INFERENCE_ROWS` rows (`n/a` for results that did not measure it). The verdict per
budget and the unified frontier check are `featmux.benchmarks.verdicts`.

Example:
    >>> files = write_report("runs/frappe")            # runs/frappe/report/{report.md, results.csv, *.png}
    >>> rows = aggregate(load_results("runs/frappe"))
    >>> checks = claim_checks(rows)
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from featmux.benchmarks.runner import CELLS
from featmux.training.inference_time import INFERENCE_ROWS

METHOD_ORDER = ("collisionless", "hashing", "unified")


@dataclass(frozen=True)
class CellRecord:
    """The fields of one result file that the report uses.

    Args:
        dataset, model, method, budget, seed: the cell's labels (`bench` section, else the result's own).
        embedding: the embedding method behind the method label.
        split_seed: the seed of its carved data split (None: not recorded, or fixed splits).
        at_cap: it stopped at its epoch or step cap, not by early stopping (None: unknown).
        test_auc, test_logloss: test metrics (None without a test split).
        embedding_params, embedding_bytes: size of the embedding layer.
        train_seconds, samples_per_second: training speed.
        peak_rss_bytes: peak resident memory of the cell (None if not measured).
        device: where it trained: "cpu", or the GPU's name.
        source: the file it came from.
        inference_ms, inference_rows: median forward time of the served model on one held-out batch
            and that batch's rows (None in results written before it was measured).
        fingerprint: the grid cell's settings hash (None for a plain `run_experiment` result).
        duplicates: files of the same cell with the same fingerprint that `load_results` left out
            for this one (another grid that shares the cell, e.g. a zoo's `unified`).
    """

    dataset: str
    model: str
    method: str
    budget: str
    seed: int
    embedding: str
    test_auc: float | None
    test_logloss: float | None
    embedding_params: int
    embedding_bytes: int
    train_seconds: float | None
    samples_per_second: float | None
    peak_rss_bytes: int | None
    device: str = "cpu"
    source: str = ""
    split_seed: int | None = None
    at_cap: bool | None = None
    inference_ms: float | None = None
    inference_rows: int | None = None
    fingerprint: str | None = None
    duplicates: tuple[str, ...] = ()

    @classmethod
    def from_result(cls, result: dict[str, Any], source: str = "") -> CellRecord:
        """Read a result dict (from `run_benchmark`, or a plain `run_experiment` result)."""
        bench = result.get("bench", {})
        embedding = str(result["embedding"])
        budget = bench.get("budget", "1" if embedding == "collisionless" else result.get("budget", "1"))
        peak = result.get("peak_rss_bytes")
        # a grid cell names its split seed only when the grid varies it (its key says so); the run
        # itself always records the one it used (the source's default), which must not change the key
        split = bench.get("split_seed") if bench else result.get("split_seed")
        inference = result.get("inference") or {}
        return cls(
            dataset=str(bench.get("dataset", result["dataset"])),
            model=str(bench.get("model", result["model"])),
            method=str(bench.get("method", embedding)),
            budget=str(budget),
            seed=int(bench.get("seed", result.get("seed", 0))),
            embedding=embedding,
            test_auc=_float(result.get("test_auc")),
            test_logloss=_float(result.get("test_logloss")),
            embedding_params=int(result["embedding_params"]),
            embedding_bytes=int(result["embedding_bytes"]),
            train_seconds=_float(result.get("train_seconds")),
            samples_per_second=_float(result.get("samples_per_second")),
            peak_rss_bytes=int(peak) if peak is not None else None,
            device=_device(result),
            source=source,
            split_seed=None if split is None else int(split),
            at_cap=stopped_at_cap(result),
            inference_ms=_float(inference.get("median_ms")),
            inference_rows=int(inference["rows"]) if "rows" in inference else None,
            fingerprint=bench.get("fingerprint"),
        )


def stopped_at_cap(result: dict[str, Any]) -> bool | None:
    """Whether a run ended at its epoch or step cap rather than by early stopping (None: unknown).

    Early stopping ended it when its last `patience` evaluations came after the best one.
    """
    config = result.get("config") or {}
    cap, max_steps, patience = config.get("epochs"), config.get("max_steps"), config.get("patience")
    epochs, steps, best = result.get("epochs"), result.get("steps"), result.get("best_step")
    if cap is None or epochs is None or patience is None or best is None:
        return None
    after_best = sum(1 for h in result.get("history", []) if h.get("step", -1) > best and "valid_auc" in h)
    if after_best >= int(patience):
        return False
    return float(epochs) >= float(cap) - 1e-9 or (max_steps is not None and int(steps or 0) >= int(max_steps))


def _device(result: dict[str, Any]) -> str:
    """ "cpu", or the GPU's name (short: "NVIDIA H100 80GB HBM3" -> "H100") for a result trained on CUDA."""
    if str(result.get("config", {}).get("device", "cpu")).split(":")[0] != "cuda":
        return "cpu"
    name = str(result.get("environment", {}).get("gpu") or "cuda")
    words = name.removeprefix("NVIDIA ").split()
    return words[0] if words else "cuda"


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def load_results(path: str | Path | Sequence[str | Path]) -> list[CellRecord]:
    """Every result in a benchmark directory (its `cells/`), or every *.json under `path` otherwise.

    Several directories (or a folder holding several grids' directories) load together. Two results
    of one cell and seed with the same settings (grid fingerprint), as when two grids share a cell,
    count once: the first file (in path order) is kept and names the others in its `duplicates`.

    Raises:
        ValueError: a file that is not a result, or two results for the same cell and seed whose
            settings differ (or are unknown).
    """
    files = [file for folder in _result_folders(path) for file in _result_files(folder)]
    records: dict[tuple[str, str, str, str, int, int | None], CellRecord] = {}
    for file in files:
        try:
            record = CellRecord.from_result(json.loads(file.read_text()), str(file))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{file}: not a featmux result ({type(err).__name__}: {err})") from err
        key = (record.dataset, record.model, record.method, record.budget, record.seed, record.split_seed)
        kept = records.get(key)
        if kept is None:
            records[key] = record
        elif kept.fingerprint is not None and kept.fingerprint == record.fingerprint:
            records[key] = replace(kept, duplicates=(*kept.duplicates, str(file)))
        else:
            raise ValueError(
                f"{file} and {kept.source} are both results of {record_key(record)}, with different or "
                "unknown settings"
            )
    return list(records.values())


def _result_folders(path: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]


def _result_files(path: Path) -> list[Path]:
    """The result files of one directory, in path order (manifests and failed cells left out)."""
    folder = path / CELLS if (path / CELLS).is_dir() else path
    files = sorted(folder.glob("*.json") if folder.name == CELLS else folder.rglob("*.json"))
    return [f for f in files if f.name != "manifest.json" and f.parent.name != "failed"]


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof = 1) of the values that are not None; std is None below two values."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        xs = [float(v) for v in values if v is not None]
        if not xs:
            return cls(None, None, 0)
        mean = math.fsum(xs) / len(xs)
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
        return cls(mean, std, len(xs))

    def format(self, digits: int = 4) -> str:
        """`0.9812 ± 0.0004` (no std: `0.9812`; no values: `—`)."""
        if self.mean is None:
            return "—"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass(frozen=True)
class ReportRow:
    """Aggregate of one dataset x model x method x budget over its seeds.

    Args:
        dataset, model, method, budget: the group's labels.
        embedding: the embedding method behind the method label.
        seeds: the seeds found.
        embedding_params, embedding_bytes: mean over seeds (equal across seeds for a given budget).
        test_auc, test_logloss, train_seconds, samples_per_second: mean ± std over seeds.
        peak_rss_bytes: the largest peak RSS of its cells (None if not measured).
        devices: where its cells trained, each device once, e.g. ("cpu", "H200").
        split_seeds: the split seeds found (None for cells that recorded none), each once.
        at_cap: how many of its cells stopped at their epoch or step cap.
        inference_ms: mean ± std over seeds of the median forward time on one held-out batch (its
            `n` counts the cells that measured it).
        inference_rows: the rows of those batches, each size once (empty: none measured).
    """

    dataset: str
    model: str
    method: str
    budget: str
    embedding: str
    seeds: tuple[int, ...]
    embedding_params: float
    embedding_bytes: float
    test_auc: Stat
    test_logloss: Stat
    train_seconds: Stat
    samples_per_second: Stat
    peak_rss_bytes: int | None
    devices: tuple[str, ...] = ("cpu",)
    split_seeds: tuple[int | None, ...] = (None,)
    at_cap: int = 0
    inference_ms: Stat = Stat(None, None, 0)
    inference_rows: tuple[int, ...] = ()

    @property
    def group(self) -> tuple[str, str]:
        return (self.dataset, self.model)


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def aggregate(records: Sequence[CellRecord]) -> list[ReportRow]:
    """One row per dataset x model x method x budget; rows sorted by dataset, model, method, size."""
    groups: dict[tuple[str, str, str, str], list[CellRecord]] = defaultdict(list)
    for r in records:
        groups[(r.dataset, r.model, r.method, r.budget)].append(r)
    rows = []
    for (dataset, model, method, budget), rs in groups.items():
        rs = sorted(rs, key=lambda r: (r.seed, -1 if r.split_seed is None else r.split_seed))
        peaks = [r.peak_rss_bytes for r in rs if r.peak_rss_bytes is not None]
        rows.append(
            ReportRow(
                dataset=dataset,
                model=model,
                method=method,
                budget=budget,
                embedding=rs[0].embedding,
                seeds=tuple(r.seed for r in rs),
                embedding_params=math.fsum(r.embedding_params for r in rs) / len(rs),
                embedding_bytes=math.fsum(r.embedding_bytes for r in rs) / len(rs),
                test_auc=Stat.of(r.test_auc for r in rs),
                test_logloss=Stat.of(r.test_logloss for r in rs),
                train_seconds=Stat.of(r.train_seconds for r in rs),
                samples_per_second=Stat.of(r.samples_per_second for r in rs),
                peak_rss_bytes=max(peaks) if peaks else None,
                devices=tuple(sorted({r.device for r in rs})),
                split_seeds=tuple(sorted({r.split_seed for r in rs}, key=lambda k: -1 if k is None else k)),
                at_cap=sum(1 for r in rs if r.at_cap),
                inference_ms=Stat.of(r.inference_ms for r in rs),
                inference_rows=tuple(sorted({r.inference_rows for r in rs if r.inference_rows is not None})),
            )
        )
    return sorted(rows, key=lambda r: (r.dataset, r.model, _method_rank(r.method), -r.embedding_bytes))


def record_key(record: CellRecord) -> str:
    """The key of the grid cell a record is the result of (`featmux.benchmarks.grid.cell_key`)."""
    from featmux.benchmarks.grid import cell_key

    r = record
    return cell_key(r.dataset, r.model, r.method, r.budget, r.seed, r.split_seed)


def variance_source(records: Sequence[CellRecord]) -> str:
    """What the ± of a report is: which seeds vary among the cells of a row.

    Returns:
        A sentence: std over initialization seeds on one data split, over split seeds, or over both.
    """
    groups: dict[tuple[str, str, str, str], list[CellRecord]] = defaultdict(list)
    for r in records:
        groups[(r.dataset, r.model, r.method, r.budget)].append(r)
    inits = any(len({r.seed for r in rs}) > 1 for rs in groups.values())
    splits = any(len({r.split_seed for r in rs}) > 1 for rs in groups.values())
    if inits and splits:
        return (
            "± is the sample std (ddof = 1) over initialization seeds and data-split seeds together "
            "(column `seeds` counts the cells)."
        )
    if splits:
        return "± is the sample std (ddof = 1) over data-split seeds, one initialization seed each."
    fixed = sorted({r.split_seed for r in records}, key=lambda k: -1 if k is None else k)
    which = "the source's default split (split seed 0)" if fixed == [None] else f"split seed(s) {fixed}"
    return (
        "± is the sample std (ddof = 1) over initialization seeds (model init and batch order) on one "
        f"data split per row, {which}: it leaves out the variance between splits."
    )


@dataclass(frozen=True)
class BudgetGap:
    """Treatment minus baseline test AUC at one budget."""

    budget: str
    embedding_params: float
    treatment: Stat
    baseline: Stat
    gap: float
    pooled_std: float | None
    exceeds_std: bool | None  # None when a std is undefined (one seed)


@dataclass(frozen=True)
class ClaimCheck:
    """Does the treatment (unified) beat the baseline (hashing), and more so at smaller budgets?

    Args:
        dataset, model: the group.
        treatment, baseline: the two method labels.
        gaps: one per budget both methods ran, largest budget first.
    """

    dataset: str
    model: str
    treatment: str
    baseline: str
    gaps: tuple[BudgetGap, ...]

    @property
    def ahead_everywhere(self) -> bool:
        return bool(self.gaps) and all(g.gap > 0 for g in self.gaps)

    @property
    def widens(self) -> bool | None:
        """Gap at the smallest budget > gap at the largest (None with fewer than two budgets)."""
        return self.gaps[-1].gap > self.gaps[0].gap if len(self.gaps) >= 2 else None

    @property
    def widens_monotonically(self) -> bool | None:
        """Every step to a smaller budget widens the gap or keeps it (None with fewer than two budgets)."""
        if len(self.gaps) < 2:
            return None
        return all(b.gap >= a.gap for a, b in zip(self.gaps, self.gaps[1:], strict=False))

    def summary(self) -> str:
        """One sentence with the verdict."""
        if not self.gaps:
            return f"no budget where both {self.treatment} and {self.baseline} ran"
        exceed = [g for g in self.gaps if g.exceeds_std]
        known = [g for g in self.gaps if g.exceeds_std is not None]
        ahead = sum(g.gap > 0 for g in self.gaps)
        parts = [f"{self.treatment} ahead of {self.baseline} at {ahead}/{len(self.gaps)} budgets"]
        if known:
            parts.append(f"gap beyond the seed std at {len(exceed)}/{len(known)}")
        if self.widens is not None:
            how = "monotonically" if self.widens_monotonically else "not monotonically"
            parts.append(f"gap widens as the budget shrinks ({how})" if self.widens else "gap does not widen")
        return "; ".join(parts) + "."


def claim_checks(
    rows: Sequence[ReportRow], treatment: str = "unified", baseline: str = "hashing"
) -> list[ClaimCheck]:
    """One `ClaimCheck` per dataset x model that has both methods.

    Args:
        rows: from `aggregate`.
        treatment: method label expected to win (unified).
        baseline: method label it is compared with (hashing).
    """
    by_group: dict[tuple[str, str], dict[str, dict[str, ReportRow]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by_group[r.group][r.method][r.budget] = r
    checks = []
    for (dataset, model), methods in sorted(by_group.items()):
        if treatment not in methods or baseline not in methods:
            continue
        common = set(methods[treatment]) & set(methods[baseline])
        gaps = []
        for budget in common:
            t, b = methods[treatment][budget], methods[baseline][budget]
            if t.test_auc.mean is None or b.test_auc.mean is None:
                continue
            gap = t.test_auc.mean - b.test_auc.mean
            pooled = (
                math.sqrt((t.test_auc.std**2 + b.test_auc.std**2) / 2)
                if t.test_auc.std is not None and b.test_auc.std is not None
                else None
            )
            exceeds = None if pooled is None else gap > pooled
            gaps.append(BudgetGap(budget, t.embedding_params, t.test_auc, b.test_auc, gap, pooled, exceeds))
        gaps.sort(key=lambda g: -g.embedding_params)
        checks.append(ClaimCheck(dataset, model, treatment, baseline, tuple(gaps)))
    return checks


def _int(x: float) -> str:
    return f"{round(x):,}"


def _bytes(x: float | None) -> str:
    """Decimal units: `512 B`, `215.3 kB`, `1.50 GB`."""
    if x is None:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= size:
            return f"{x / size:,.2f} {unit}" if unit == "GB" else f"{x / size:,.1f} {unit}"
    return f"{round(x)} B"


def _speed(stat: Stat) -> str:
    if stat.mean is None:
        return "—"
    return f"{stat.mean:,.0f}" + (f" ± {stat.std:,.0f}" if stat.std is not None else "")


def inference_cell(row: ReportRow) -> str:
    """The row's inference time for a table: `12.34 ± 0.56`, with the batch rows when they are not
    `INFERENCE_ROWS` and the share of cells when only some measured it; `n/a` when none did."""
    if row.inference_ms.mean is None:
        return "n/a"
    notes = []
    if row.inference_rows != (INFERENCE_ROWS,):
        notes.append("/".join(f"{n:,}" for n in row.inference_rows) + " rows")
    if row.inference_ms.n < len(row.seeds):
        notes.append(f"{row.inference_ms.n}/{len(row.seeds)} cells")
    return row.inference_ms.format(2) + (f" ({'; '.join(notes)})" if notes else "")


def markdown_table(rows: Sequence[ReportRow]) -> str:
    """The results table (one row per dataset x model x method x budget)."""
    head = (
        "| dataset | model | method | budget | emb. params | emb. bytes | seeds | at cap | test AUC "
        f"| test logloss | train s | samples/s | infer ms / {INFERENCE_ROWS} rows | peak RSS | device |\n"
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = [
        f"| {r.dataset} | {r.model} | {r.method} | {r.budget} | {_int(r.embedding_params)} "
        f"| {_bytes(r.embedding_bytes)} | {len(r.seeds)} | {r.at_cap or ''} | {r.test_auc.format(4)} "
        f"| {r.test_logloss.format(4)} "
        f"| {r.train_seconds.format(1)} | {_speed(r.samples_per_second)} | {inference_cell(r)} "
        f"| {_bytes(r.peak_rss_bytes)} | {', '.join(r.devices)} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def markdown_claims(checks: Sequence[ClaimCheck]) -> str:
    """The claim-check section: one small table and a verdict per dataset x model."""
    if not checks:
        return "No dataset has results for both methods.\n"
    out = []
    for c in checks:
        out.append(f"### {c.dataset} / {c.model}\n\n")
        out.append(
            f"| budget | emb. params | {c.treatment} AUC | {c.baseline} AUC | gap | pooled seed std "
            "| gap > std |\n|---|---:|---:|---:|---:|---:|---|\n"
        )
        for g in c.gaps:
            std = "—" if g.pooled_std is None else f"{g.pooled_std:.4f}"
            exceeds = "n/a" if g.exceeds_std is None else ("yes" if g.exceeds_std else "no")
            out.append(
                f"| {g.budget} | {_int(g.embedding_params)} | {g.treatment.format(4)} | "
                f"{g.baseline.format(4)} | {g.gap:+.4f} | {std} | {exceeds} |\n"
            )
        out.append(f"\n{c.summary()}\n\n")
    return "".join(out)


def markdown_report(
    rows: Sequence[ReportRow],
    checks: Sequence[ClaimCheck],
    title: str = "Benchmark report",
    notes: Sequence[str] = (),
    plots: Sequence[str] = (),
    variance: str = "± is the sample std (ddof = 1) over seeds.",
    sections: Sequence[str] = (),
) -> str:
    """The whole report as Markdown (`variance`: what the ± is, from `variance_source`; `sections`:
    further Markdown sections after the claim check, e.g. `verdicts.verdict_sections`)."""
    parts = [f"# {title}\n\n"]
    parts += [f"{n}\n\n" for n in notes]
    parts.append(
        f"Mean ± std. {variance} Embedding parameters and bytes from the layers' "
        "`num_parameters()` / `memory_bytes()`; kB, MB, GB are 10^3, 10^6, 10^9 bytes.\n\n## Results\n\n"
    )
    parts.append(markdown_table(rows))
    capped = sum(r.at_cap for r in rows)
    if capped:
        parts.append(
            f"\n`at cap`: {capped} of {sum(len(r.seeds) for r in rows)} cells stopped at their epoch (or "
            "step) cap, not by early stopping: their numbers may still have been improving.\n"
        )
    if len({d for r in rows for d in r.devices}) > 1:
        parts.append(
            "\nCells trained on different devices (column `device`): AUC and logloss compare across "
            "them, train seconds and samples/s only within one device.\n"
        )
    treatment = checks[0].treatment if checks else "unified"
    baseline = checks[0].baseline if checks else "hashing"
    parts.append(f"\n## Claim check: {treatment} vs {baseline}\n\n")
    parts.append(
        f"Gap = mean test AUC of {treatment} minus {baseline} at the same budget; it exceeds the seed "
        "std when gap > sqrt((s_1^2 + s_2^2) / 2). The paper's claim: the gap is positive and widens "
        "as the budget shrinks.\n\n"
    )
    parts.append(markdown_claims(checks))
    parts += [f"\n{section}\n" for section in sections]
    if plots:
        parts.append("## Pareto plots\n\n")
        parts += [f"![{Path(p).stem}]({p})\n\n" for p in plots]
    return "".join(parts)


CSV_COLUMNS = (
    "dataset", "model", "method", "embedding", "budget", "seeds", "embedding_params", "embedding_bytes",
    "test_auc_mean", "test_auc_std", "test_logloss_mean", "test_logloss_std", "train_seconds_mean",
    "train_seconds_std", "samples_per_second_mean", "samples_per_second_std", "inference_ms_mean",
    "inference_ms_std", "inference_rows", "peak_rss_bytes", "devices", "split_seeds", "at_cap",
)  # fmt: skip


def csv_text(rows: Sequence[ReportRow]) -> str:
    """The aggregated rows as CSV (empty cells where a value is undefined)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def v(x: float | int | None) -> str:
        return "" if x is None else repr(x)

    for r in rows:
        writer.writerow(
            [
                r.dataset, r.model, r.method, r.embedding, r.budget, len(r.seeds),
                v(r.embedding_params), v(r.embedding_bytes),
                v(r.test_auc.mean), v(r.test_auc.std), v(r.test_logloss.mean), v(r.test_logloss.std),
                v(r.train_seconds.mean), v(r.train_seconds.std),
                v(r.samples_per_second.mean), v(r.samples_per_second.std),
                v(r.inference_ms.mean), v(r.inference_ms.std), " ".join(str(n) for n in r.inference_rows),
                v(r.peak_rss_bytes),
                " ".join(r.devices), " ".join("default" if k is None else str(k) for k in r.split_seeds),
                r.at_cap,
            ]
        )  # fmt: skip
    return buffer.getvalue()


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by `write_report`."""

    markdown: Path
    csv: Path
    plots: tuple[Path, ...]


def write_report(
    results_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path | None = None,
    treatment: str = "unified",
    baseline: str = "hashing",
    plots: bool = True,
) -> ReportFiles:
    """Aggregate a results directory into report.md, results.csv and one Pareto PNG per dataset x model.

    Args:
        results_dir: a `run_benchmark` output directory (or any folder of result JSON files), or
            several, reported together (e.g. a zoo grid and the grid of unified variants).
        out_dir: where to write (default `<results_dir>/report`; required for several directories).
        treatment, baseline: the methods the claim check compares.
        plots: draw the Pareto plots.

    Raises:
        ValueError: no results found, or several directories and no `out_dir`.
    """
    from featmux.benchmarks.plots import pareto_plots
    from featmux.benchmarks.verdicts import verdict_sections

    folders = _result_folders(results_dir)
    if len(folders) != 1 and out_dir is None:
        raise ValueError(f"a report of {len(folders)} results directories needs an output directory")
    out = Path(out_dir) if out_dir is not None else folders[0] / "report"
    records = load_results(folders)
    if not records:
        raise ValueError(f"no result files in {', '.join(map(str, folders))}")
    rows = aggregate(records)
    checks = claim_checks(rows, treatment, baseline)
    out.mkdir(parents=True, exist_ok=True)
    pngs = tuple(pareto_plots(rows, out)) if plots else ()
    notes = [f"{len(records)} results from " + ", ".join(f"`{f}`" for f in folders) + "."]
    shared = sum(len(r.duplicates) for r in records)
    if shared:
        notes.append(
            f"{shared} further file(s) hold a cell already counted, with the same settings (grids that "
            "share cells): each counted once."
        )
    names = []
    found = {record_key(r) for r in records}
    for folder in folders:
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            names.append(folder.name)
            continue
        info = json.loads(manifest.read_text())
        names.append(str(info.get("name", folder.name)))
        expected = {c["key"] for c in info.get("cells", [])}
        missing = sorted(expected - found)
        grid = "The grid" if len(folders) == 1 else f"Grid {names[-1]}"
        notes.append(f"{grid} has {len(expected)} cells; {len(missing)} have no result yet.")
        if missing:
            notes.append(
                "Missing: "
                + ", ".join(f"`{k}`" for k in missing[:20])
                + (" ..." if len(missing) > 20 else "")
            )
    title = "Benchmark report: " + " + ".join(names)
    sections = verdict_sections(rows, treatment)
    pictures = [p.name for p in pngs]
    text = markdown_report(rows, checks, title, notes, pictures, variance_source(records), sections)
    md, table = out / "report.md", out / "results.csv"
    md.write_text(text)
    table.write_text(csv_text(rows))
    return ReportFiles(md, table, pngs)
