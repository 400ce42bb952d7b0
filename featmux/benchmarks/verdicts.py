"""Verdicts per budget and the unified frontier check, from the aggregated rows of a report.

Per dataset x model x budget, the methods at that budget (the grid's budget key: cells that had the
same byte budget) are ranked by mean test AUC. The verdict names the winner, its margin over the
runner-up and over `unified` (with both seed stds), and its training and inference time relative to
unified's at the same budget. The collisionless table has one size: it is every budget's reference
row, never a contender.

A margin is "within noise" when it is below `NOISE_FLOOR` or below the larger of the two seed stds;
"beyond noise" when both stds are known and it exceeds both; with a single seed on a side (no std) and
a margin above the floor, its noise is unknown and the verdict says so.

The frontier check (the goal of issue 14): per dataset x model x budget, the best method whose name
starts with `unified` (unified, unified-int8, unified-auto, ...) against the best other method there
(collisionless aside), and against the collisionless table.

Example:
    >>> rows = aggregate(load_results("runs/zoo"))
    >>> [v.summary() for v in budget_verdicts(rows)]
    >>> markdown_frontier(frontier_checks(rows))
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, unique

from featmux.benchmarks.report import ReportRow, Stat, _bytes, inference_cell

NOISE_FLOOR = 0.001
"""AUC margins below this are within noise whatever the seed stds say."""

COLLISIONLESS = "collisionless"


@unique
class Noise(Enum):
    """Whether an AUC margin stands out of the seed-to-seed variation."""

    WITHIN = "within noise"
    BEYOND = "beyond noise"
    UNKNOWN = "noise unknown: one seed"


@dataclass(frozen=True)
class Margin:
    """Mean test AUC of `first` minus `second`, judged against their seed stds.

    Args:
        first: the row whose AUC is ahead when the margin is positive.
        second: the row it is compared with.

    Example:
        >>> Margin(winner, runner_up).format()
        '+0.0040 (0.7600 ± 0.0100 vs 0.7200 ± 0.0200, beyond noise)'
    """

    first: ReportRow
    second: ReportRow

    @property
    def value(self) -> float:
        a, b = self.first.test_auc.mean, self.second.test_auc.mean
        if a is None or b is None:
            raise ValueError("a margin needs the test AUC of both rows")
        return a - b

    @property
    def noise(self) -> Noise:
        """Within noise below the floor or the larger std; beyond it only when both stds are known."""
        stds = [s for s in (self.first.test_auc.std, self.second.test_auc.std) if s is not None]
        size = abs(self.value)
        if size < NOISE_FLOOR or (stds and size < max(stds)):
            return Noise.WITHIN
        return Noise.BEYOND if len(stds) == 2 else Noise.UNKNOWN

    def format(self) -> str:
        """`+0.0040 (0.7600 ± 0.0100 vs 0.7200 ± 0.0200, beyond noise)`."""
        return (
            f"{self.value:+.4f} ({self.first.test_auc.format(4)} vs {self.second.test_auc.format(4)}, "
            f"{self.noise.value})"
        )


def _ratio(a: Stat, b: Stat) -> float | None:
    if a.mean is None or b.mean is None or b.mean <= 0:
        return None
    return a.mean / b.mean


def format_ratio(ratio: float | None) -> str:
    """`1.8x`, `0.45x`, `12x`; `n/a` when either time is missing."""
    if ratio is None:
        return "n/a"
    if ratio >= 10:
        return f"{ratio:.0f}x"
    return f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"


@dataclass(frozen=True)
class BudgetVerdict:
    """The methods at one budget of one dataset x model, best mean test AUC first.

    Args:
        dataset: the dataset label.
        model: the model label.
        budget: the budget label shared by the ranked cells.
        ranking: the contenders with a test AUC, best first (ties by method name).
        reference: the collisionless row of this dataset x model (None if it did not run).
        treatment: the method the times are relative to ("unified").

    Example:
        >>> verdict = budget_verdicts(rows)[0]
        >>> verdict.winner.method, verdict.over_runner_up.format()
    """

    dataset: str
    model: str
    budget: str
    ranking: tuple[ReportRow, ...]
    reference: ReportRow | None
    treatment: str = "unified"

    @property
    def winner(self) -> ReportRow:
        return self.ranking[0]

    @property
    def unified(self) -> ReportRow | None:
        """The treatment's row at this budget (None if it did not run here)."""
        return next((r for r in self.ranking if r.method == self.treatment), None)

    @property
    def over_runner_up(self) -> Margin | None:
        return Margin(self.ranking[0], self.ranking[1]) if len(self.ranking) > 1 else None

    @property
    def over_unified(self) -> Margin | None:
        """The winner's margin over the treatment (None when the winner is it, or it did not run)."""
        unified = self.unified
        return None if unified is None or unified is self.winner else Margin(self.winner, unified)

    def train_ratio(self, row: ReportRow) -> float | None:
        """`row`'s mean training seconds over the treatment's at this budget."""
        return None if self.unified is None else _ratio(row.train_seconds, self.unified.train_seconds)

    def inference_ratio(self, row: ReportRow) -> float | None:
        """`row`'s mean inference ms over the treatment's at this budget."""
        return None if self.unified is None else _ratio(row.inference_ms, self.unified.inference_ms)

    def summary(self) -> str:
        """The written verdict: who wins, by how much, at what cost in time."""
        w, t = self.winner, self.treatment
        runner = self.over_runner_up
        clear = runner is None or runner.noise is Noise.BEYOND
        text = f"At {self.budget}, **{w.method}** {'wins' if clear else 'ranks first'} with test AUC "
        text += w.test_auc.format(4)
        if runner is None:
            text += " (the only method at this budget)"
        else:
            text += f": {runner.format()} over the runner-up {runner.second.method}"
        over = self.over_unified
        if over is not None and (runner is None or over.second is not runner.second):
            text += f"; {over.format()} over {t}"
        if w.method == t:
            text += f". {t} is the time reference."
        elif self.unified is None:
            text += f". {t} did not run at this budget: no time comparison."
        else:
            costs = [f"{format_ratio(self.train_ratio(w))} {t}'s train s"]
            if self.inference_ratio(w) is not None:  # cells from before inference was timed have none
                costs.append(f"{format_ratio(self.inference_ratio(w))} {t}'s inference ms")
            text += f". It takes {' and '.join(costs)}."
        if self.reference is not None and self.reference.test_auc.mean is not None:
            text += f" Against collisionless: {Margin(w, self.reference).format()}."
        return text


def budget_verdicts(rows: Sequence[ReportRow], treatment: str = "unified") -> list[BudgetVerdict]:
    """One `BudgetVerdict` per dataset x model x budget with at least one contender.

    Args:
        rows: from `aggregate`.
        treatment: the method the margins and times are taken against.

    Returns:
        Sorted by dataset and model, then largest budget (bytes) first.
    """
    references: dict[tuple[str, str], ReportRow] = {}
    budgets: dict[tuple[str, str], dict[str, list[ReportRow]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.embedding == COLLISIONLESS:
            references[r.group] = r
        elif r.test_auc.mean is not None:
            budgets[r.group][r.budget].append(r)
    verdicts = []
    for group in sorted(budgets):
        by_budget = budgets[group]
        for budget in sorted(by_budget, key=lambda b: -max(r.embedding_bytes for r in by_budget[b])):
            ranking = sorted(by_budget[budget], key=lambda r: (-(r.test_auc.mean or 0.0), r.method))
            verdicts.append(BudgetVerdict(*group, budget, tuple(ranking), references.get(group), treatment))
    return verdicts


def markdown_verdicts(verdicts: Sequence[BudgetVerdict]) -> str:
    """The verdict section: per dataset x model a summary table, then per budget the verdict and ranking."""
    if not verdicts:
        return "No budgeted method has a test AUC.\n"
    out = []
    groups: dict[tuple[str, str], list[BudgetVerdict]] = defaultdict(list)
    for v in verdicts:
        groups[(v.dataset, v.model)].append(v)
    for (dataset, model), vs in groups.items():
        t = vs[0].treatment
        out.append(f"### {dataset} / {model}\n\n")
        out.append(
            _head("budget", "winner", "test AUC:", "over runner-up", f"over {t}", f"train s vs {t}:",
                  f"inference vs {t}:")
        )  # fmt: skip
        out += [
            _row(v.budget, v.winner.method, v.winner.test_auc.format(4), _margin_cell(v.over_runner_up),
                 "(winner)" if v.winner is v.unified else _margin_cell(v.over_unified),
                 format_ratio(v.train_ratio(v.winner)), format_ratio(v.inference_ratio(v.winner)))
            for v in vs
        ]  # fmt: skip
        for v in vs:
            out.append(f"\n#### {dataset} / {model} at {v.budget}\n\n{v.summary()}\n\n")
            out.append(_ranking_table(v))
        out.append("\n")
    return "".join(out)


def _head(*columns: str) -> str:
    """A Markdown table's head; a column written with a trailing ':' is right-aligned."""
    names = " | ".join(c.removesuffix(":") for c in columns)
    rules = "|".join("---:" if c.endswith(":") else "---" for c in columns)
    return f"| {names} |\n|{rules}|\n"


def _row(*cells: str) -> str:
    return f"| {' | '.join(cells)} |\n"


def _margin_cell(margin: Margin | None) -> str:
    if margin is None:
        return "—"
    return f"{margin.value:+.4f} vs {margin.second.method} ({margin.noise.value})"


def _ranking_table(v: BudgetVerdict) -> str:
    t = v.treatment
    lines = [
        _head("rank:", "method", "test AUC:", "vs winner:", "emb. bytes:", "train s:", f"x {t}:", "infer ms:",
              f"x {t}:")
    ]  # fmt: skip
    ranked = [(str(i), r) for i, r in enumerate(v.ranking, 1)]
    for rank, r in ranked + ([("ref.", v.reference)] if v.reference is not None else []):
        gap = "—" if r.test_auc.mean is None else f"{Margin(r, v.winner).value:+.4f}"
        lines.append(
            _row(rank, r.method, r.test_auc.format(4), gap, _bytes(r.embedding_bytes),
                 r.train_seconds.format(1), format_ratio(v.train_ratio(r)), inference_cell(r),
                 format_ratio(v.inference_ratio(r)))
        )  # fmt: skip
    return "".join(lines)


@dataclass(frozen=True)
class FrontierCheck:
    """The best unified variant at one budget against the best other method and the collisionless table.

    Args:
        dataset: the dataset label.
        model: the model label.
        budget: the budget label.
        unified: the best row whose method starts with the family prefix (by mean test AUC).
        other: the best row outside the family (None if none ran at this budget).
        reference: the collisionless row (None if it did not run).

    Example:
        >>> check = frontier_checks(rows)[0]
        >>> check.on_or_above, check.reaches_reference
    """

    dataset: str
    model: str
    budget: str
    unified: ReportRow
    other: ReportRow | None
    reference: ReportRow | None

    @property
    def over_other(self) -> Margin | None:
        return None if self.other is None else Margin(self.unified, self.other)

    @property
    def over_reference(self) -> Margin | None:
        if self.reference is None or self.reference.test_auc.mean is None:
            return None
        return Margin(self.unified, self.reference)

    @property
    def on_or_above(self) -> bool | None:
        """At or above the best other method (a deficit within noise counts as on it); None: no other."""
        return _at_least(self.over_other)

    @property
    def reaches_reference(self) -> bool | None:
        """At or above the collisionless table, within noise; None without it."""
        return _at_least(self.over_reference)


def _at_least(margin: Margin | None) -> bool | None:
    return None if margin is None else margin.value >= 0 or margin.noise is Noise.WITHIN


def _standing(margin: Margin | None) -> str:
    """`above`, `on (within noise)` or `below`, naming unknown noise; `—` without a comparison."""
    if margin is None:
        return "—"
    if margin.noise is Noise.WITHIN:
        return "on (within noise)"
    word = "above" if margin.value > 0 else "below"
    return f"{word} (one seed)" if margin.noise is Noise.UNKNOWN else word


def frontier_checks(rows: Sequence[ReportRow], prefix: str = "unified") -> list[FrontierCheck]:
    """One `FrontierCheck` per dataset x model x budget where a method named `prefix...` ran.

    Args:
        rows: from `aggregate`.
        prefix: the family: every method whose name starts with it (unified, unified-int8, ...).
    """
    checks = []
    for v in budget_verdicts(rows):
        family = [r for r in v.ranking if r.method.startswith(prefix)]
        others = [r for r in v.ranking if not r.method.startswith(prefix)]
        if family:
            best_other = others[0] if others else None
            checks.append(FrontierCheck(v.dataset, v.model, v.budget, family[0], best_other, v.reference))
    return checks


def markdown_frontier(checks: Sequence[FrontierCheck], prefix: str = "unified") -> str:
    """The frontier section: one table row per budget and one verdict line per dataset x model."""
    if not checks:
        return f"No method named {prefix}* has a test AUC.\n"
    out = [
        _head("dataset", "model", "budget", f"best {prefix}*", "test AUC:", "best other", "test AUC:",
              "margin:", "on or above", "vs collisionless:", "reaches it")
    ]  # fmt: skip
    for c in checks:
        other, ref = c.over_other, c.over_reference
        out.append(
            _row(c.dataset, c.model, c.budget, c.unified.method, c.unified.test_auc.format(4),
                 c.other.method if c.other else "—", c.other.test_auc.format(4) if c.other else "—",
                 f"{other.value:+.4f}" if other else "—", _standing(other),
                 f"{ref.value:+.4f}" if ref else "—", _yes_no(c.reaches_reference))
        )  # fmt: skip
    out.append("\n")
    out += [f"- {line}\n" for line in frontier_summaries(checks, prefix)]
    return "".join(out)


def frontier_summaries(checks: Sequence[FrontierCheck], prefix: str = "unified") -> list[str]:
    """One sentence per dataset x model: at how many budgets the best variant is on or above the best
    other method (and where it falls short, by how much), and where it reaches collisionless."""
    groups: dict[tuple[str, str], list[FrontierCheck]] = defaultdict(list)
    for c in checks:
        groups[(c.dataset, c.model)].append(c)
    lines = []
    for (dataset, model), cs in groups.items():
        compared = [(c.budget, m) for c in cs if (m := c.over_other) is not None]
        short = [(budget, m) for budget, m in compared if not _at_least(m)]
        line = (
            f"{dataset} / {model}: the best {prefix}* variant is on or above the best other method at "
            f"{len(compared) - len(short)}/{len(compared)} budgets"
        )
        if short:
            below = "; ".join(f"{b}: {m.second.method} by {-m.value:.4f}" for b, m in short)
            line += f" (below at {below})"
        reached = [c.budget for c in cs if c.reaches_reference]
        if any(c.reaches_reference is not None for c in cs):
            line += "; reaches collisionless at " + (", ".join(reached) if reached else "no budget")
        lines.append(line + ".")
    return lines


def _yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def verdict_sections(
    rows: Sequence[ReportRow], treatment: str = "unified", prefix: str = "unified"
) -> list[str]:
    """The report's two sections as Markdown: the verdict per budget and the unified frontier check.

    Args:
        rows: from `aggregate`.
        treatment: the method the margins and times are taken against.
        prefix: the family whose best member the frontier check takes.
    """
    noise = (
        f"A margin is within noise below {NOISE_FLOOR} or below the larger of the two seed stds, beyond "
        "noise when both stds are known and it exceeds them; with one seed on a side its noise is unknown."
    )
    verdicts = (
        "## Verdict per budget\n\n"
        "At each budget (cells of the same byte budget) the methods are ranked by mean test AUC; the "
        "collisionless table is the reference row, not a contender. " + noise + f" Times are relative to "
        f"{treatment}'s at the same budget: train s is the wall time of training until early stopping (it "
        "counts epochs as well as speed), inference ms the median forward time of the served model on one "
        "held-out batch.\n\n" + markdown_verdicts(budget_verdicts(rows, treatment))
    )
    frontier = (
        f"## Frontier check: the best {prefix}* variant\n\n"
        f"Per budget, the best method whose name starts with `{prefix}` against the best other method there "
        "(collisionless aside) and against the collisionless table. On or above: a margin >= 0, or a "
        f"deficit within noise. {noise}\n\n" + markdown_frontier(frontier_checks(rows, prefix), prefix)
    )
    return [verdicts, frontier]
