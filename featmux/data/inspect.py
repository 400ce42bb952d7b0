"""Per-feature statistics of a data source, streamed over its chunks.

Categorical counts are merged across chunks, so memory grows with the number of distinct values (the
vocabulary), never with the number of rows.

Example:
    >>> source = open_source("frappe", Path("shared/data/frappe"))
    >>> print(format_summaries(inspect_source(source, "valid")))
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, unique
from typing import Any

import polars as pl

from featmux.data.sources import DataSource

_COMPACT_ROWS = 1 << 20  # merge partial counts once they hold this many rows beyond the last merge


@unique
class FeatureKind(Enum):
    """What a summarized column is."""

    LABEL = "label"
    CATEGORICAL = "categorical"
    MULTIVALENT = "multivalent"
    NUMERIC = "numeric"


@dataclass(frozen=True)
class FeatureSummary:
    """Statistics of one column over a split.

    Args:
        name: the column.
        kind: label, categorical, multivalent or numeric.
        rows: rows seen.
        missing: rows without a value (null; an empty bag for multivalent features).
        distinct: distinct values (None for numeric features).
        top: the most frequent values and their counts, most frequent first (values of a bag count once
            per occurrence); empty for numeric features.
        minimum: smallest value (numeric features and the label; else None).
        maximum: largest value (numeric features and the label; else None).
        mean: mean of the present values (for the label: the positive rate; else None).

    Example:
        >>> FeatureSummary("user", FeatureKind.CATEGORICAL, 10, 0, 3, (("a", 5), ("b", 4)), None, None, None)
    """

    name: str
    kind: FeatureKind
    rows: int
    missing: int
    distinct: int | None
    top: tuple[tuple[Any, int], ...]
    minimum: float | None
    maximum: float | None
    mean: float | None


class _Counts:
    """Value counts merged over chunks: partial counts are kept and compacted now and then."""

    def __init__(self) -> None:
        self.parts: list[pl.DataFrame] = []
        self.pending = 0
        self.base = 0

    def add(self, values: pl.Series) -> None:
        counts = values.drop_nulls().value_counts(name="count").rename({values.name: "value"})
        self.parts.append(counts)
        self.pending += counts.height
        if self.pending > max(self.base, _COMPACT_ROWS):
            self.compact()

    def compact(self) -> pl.DataFrame:
        if len(self.parts) != 1:
            if self.parts:
                merged = pl.concat(self.parts).group_by("value").agg(pl.col("count").sum())
            else:
                merged = pl.DataFrame(
                    {"value": [], "count": []}, schema={"value": pl.String, "count": pl.UInt32}
                )
            self.parts = [merged]
        self.base, self.pending = self.parts[0].height, 0
        return self.parts[0]


class _Numbers:
    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.minimum: float | None = None
        self.maximum: float | None = None

    def add(self, values: pl.Series) -> None:
        present = values.cast(pl.Float64).drop_nulls().drop_nans()
        if present.len() == 0:
            return
        self.count += present.len()
        self.total += float(present.sum())
        low, high = float(present.min()), float(present.max())  # type: ignore[arg-type]
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)


def inspect_source(
    source: DataSource, split: str = "train", top: int = 5, max_rows: int | None = None
) -> list[FeatureSummary]:
    """Statistics of every column of one split, in one streamed pass.

    Args:
        source: the data source.
        split: which split.
        top: how many most frequent values to keep per categorical feature.
        max_rows: stop after this many rows (None: the whole split).

    Returns:
        One summary per column: the label, the categorical features, the numeric features (schema order).
    """
    schema = source.schema
    counts = {f.name: _Counts() for f in schema.categorical}
    counts[schema.label] = _Counts()
    numbers = {name: _Numbers() for name in (schema.label, *(f.name for f in schema.numeric))}
    missing = dict.fromkeys((schema.label, *schema.feature_names, *(f.name for f in schema.numeric)), 0)
    rows = 0
    for frame in source.split(split):
        if max_rows is not None:
            frame = frame.head(max_rows - rows)
        rows += frame.height
        for name, counter in counts.items():
            column = frame.get_column(name)
            if isinstance(column.dtype, pl.List):
                missing[name] += int((column.list.len().fill_null(0) == 0).sum())
                column = column.explode()
            else:
                missing[name] += column.null_count()
            counter.add(column)
        for name, stats in numbers.items():
            column = frame.get_column(name)
            if name != schema.label:
                missing[name] += column.null_count() + (
                    column.is_nan().sum() if column.dtype.is_float() else 0
                )
            stats.add(column)
        if max_rows is not None and rows >= max_rows:
            break
    summaries = []
    for name in (schema.label, *schema.feature_names):
        merged = counts[name].compact().sort(["count", "value"], descending=[True, False])
        head = tuple((value, int(n)) for value, n in merged.head(top).iter_rows())
        if name == schema.label:
            stats = numbers[name]
            mean = stats.total / stats.count if stats.count else None
            summary = FeatureSummary(
                name,
                FeatureKind.LABEL,
                rows,
                missing[name],
                merged.height,
                head,
                stats.minimum,
                stats.maximum,
                mean,
            )
        else:
            kind = FeatureKind.MULTIVALENT if schema.feature(name).multivalent else FeatureKind.CATEGORICAL
            summary = FeatureSummary(name, kind, rows, missing[name], merged.height, head, None, None, None)
        summaries.append(summary)
    for feature in schema.numeric:
        stats = numbers[feature.name]
        mean = stats.total / stats.count if stats.count else None
        summaries.append(
            FeatureSummary(
                feature.name,
                FeatureKind.NUMERIC,
                rows,
                missing[feature.name],
                None,
                (),
                stats.minimum,
                stats.maximum,
                mean,
            )
        )
    return summaries


def format_summaries(summaries: list[FeatureSummary]) -> str:
    """A plain-text table of summaries.

    Args:
        summaries: as returned by `inspect_source`.

    Returns:
        One header line and one line per column.
    """

    def number(x: float | None) -> str:
        return "-" if x is None else f"{x:.4g}"

    lines = [f"{'column':<20} {'kind':<12} {'rows':>10} {'missing':>9} {'distinct':>9}  top / min, max, mean"]
    for s in summaries:
        distinct = "-" if s.distinct is None else str(s.distinct)
        if s.kind in (FeatureKind.NUMERIC, FeatureKind.LABEL):
            detail = f"min {number(s.minimum)}, max {number(s.maximum)}, mean {number(s.mean)}"
        else:
            detail = ", ".join(f"{value}: {n}" for value, n in s.top)
        lines.append(f"{s.name:<20} {s.kind.value:<12} {s.rows:>10} {s.missing:>9} {distinct:>9}  {detail}")
    return "\n".join(lines)
