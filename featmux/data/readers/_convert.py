"""Raw columns (text, or Parquet types) -> the typed columns a `Schema` promises, with row checks.

Every converter is vectorized and returns the converted column plus a `Check` marking the rows whose
value does not convert; readers hand the checks to `reject_rows`, which reports and drops those rows.
Messages stay generic ("not a number", not "'abc' is not a number") so that skipped rows group by reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from featmux.data.errors import BadRows
from featmux.data.text import Check, TextChunk, reject_rows
from featmux.features import CategoricalFeature, Schema, ValueEncoding

LABEL_MESSAGE = "label must be 0 or 1"
_HEX = r"^[0-9a-fA-F]{1,16}$"  # fingerprints are 64-bit: at most 16 hex digits


def schema_columns(schema: Schema) -> list[str]:
    """Column order of every frame a reader yields: label, categorical features, numeric features."""
    return [schema.label, *schema.feature_names, *(f.name for f in schema.numeric)]


def _mask(expr_result: pl.Series) -> np.ndarray:
    return expr_result.fill_null(False).to_numpy().astype(bool, copy=False)


def _plain(values: pl.Series) -> pl.Series:
    """Categorical/Enum columns (e.g. dictionary-encoded Parquet strings) as plain String."""
    if isinstance(values.dtype, pl.Categorical | pl.Enum):
        return values.cast(pl.String)
    return values


def to_label(values: pl.Series, field: str, mapping: dict[str, int] | None = None) -> tuple[pl.Series, Check]:
    """A 0/1 label column (Int8).

    Args:
        values: raw labels: text (e.g. "0", "1", "1.0"), numbers or booleans.
        field: the label's name, for the check.
        mapping: text value -> label, replacing the numeric reading (e.g. libFM {"1": 1, "-1": 0}).

    Returns:
        Int8 labels (null where invalid) and the check flagging rows without a 0/1 label.
    """
    values = _plain(values)
    if mapping is not None:
        text = values.cast(pl.String).str.strip_chars()
        labels = text.replace_strict(
            list(mapping), list(mapping.values()), default=None, return_dtype=pl.Int8
        )
    else:
        if values.dtype == pl.String:
            number = values.str.strip_chars().cast(pl.Float64, strict=False)
        else:
            number = values.cast(pl.Float64, strict=False)
        labels = pl.select(
            pl.when(number.is_in([0.0, 1.0])).then(number).otherwise(None).cast(pl.Int8)
        ).to_series()
    return labels.alias(values.name), Check(field, LABEL_MESSAGE, _mask(labels.is_null()))


def to_float(values: pl.Series, field: str) -> tuple[pl.Series, Check]:
    """A Float64 column: empty/null/NaN -> null; text that is not a finite number is flagged."""
    values = _plain(values)
    if values.dtype == pl.String:
        text = values.str.strip_chars().replace("", None)
        number = text.cast(pl.Float64, strict=False)
        bad = (number.is_null() & text.is_not_null()) | number.is_infinite()
    elif values.dtype.is_numeric() or values.dtype == pl.Boolean:
        number = values.cast(pl.Float64)
        bad = number.is_infinite()
    else:
        number = pl.Series(values.name, [None] * values.len(), dtype=pl.Float64)
        bad = values.is_not_null()
    number = number.fill_nan(None)
    return number.alias(values.name), Check(field, "not a finite number", _mask(bad))


def to_int(values: pl.Series, field: str) -> tuple[pl.Series, Check]:
    """An Int64 column: empty/null -> null; anything that is not an integer is flagged."""
    values = _plain(values)
    if values.dtype == pl.String:
        text = values.str.strip_chars().replace("", None)
        number = text.cast(pl.Int64, strict=False)
        bad = number.is_null() & text.is_not_null()
    elif values.dtype == pl.UInt64:
        number = values.reinterpret(signed=True)  # fingerprints are int64: keep the bits of large ids
        bad = pl.Series([False] * values.len())
    elif values.dtype.is_integer() or values.dtype == pl.Boolean:
        number = values.cast(pl.Int64)
        bad = pl.Series([False] * values.len())
    elif values.dtype.is_float():
        whole = values.is_finite() & (values.round(0) == values)
        number = pl.select(pl.when(whole).then(values).otherwise(None).cast(pl.Int64)).to_series()
        bad = values.is_not_null() & ~whole.fill_null(False)
    else:
        number = pl.Series(values.name, [None] * values.len(), dtype=pl.Int64)
        bad = values.is_not_null()
    return number.alias(values.name), Check(field, "not an integer", _mask(bad))


def to_hex(values: pl.Series, field: str) -> tuple[pl.Series, Check]:
    """A String column of hexadecimal ids (empty -> null); other text is flagged."""
    text = values.cast(pl.String).str.strip_chars().replace("", None)
    bad = text.is_not_null() & ~text.str.contains(_HEX)
    return text.alias(values.name), Check(field, "not a hexadecimal id", _mask(bad))


def to_string(values: pl.Series) -> pl.Series:
    """A String column; empty strings become null (missing)."""
    return values.cast(pl.String).replace("", None)


def to_bag(values: pl.Series, feature: CategoricalFeature) -> tuple[pl.Series, Check]:
    """A multivalent column: List(String), or List(Int64) for INT encoding; empty items dropped.

    Text cells are split at `feature.separator`; an empty or missing cell is an empty list.
    """
    name = values.name
    if isinstance(values.dtype, pl.List):
        items = values.list.eval(pl.element().cast(pl.String)).fill_null([])
    else:
        items = values.cast(pl.String).fill_null("").str.split(feature.separator)
    items = items.list.eval(pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != ""))
    bad = pl.Series([False] * values.len())
    if feature.encoding is ValueEncoding.INT:
        ints = items.list.eval(pl.element().cast(pl.Int64, strict=False))
        bad = ints.list.eval(pl.element().is_null()).list.any()
        items = ints.list.eval(pl.element().drop_nulls())
    elif feature.encoding is ValueEncoding.HEX:
        bad = items.list.eval(~pl.element().str.contains(_HEX)).list.any()
    message = (
        "not a list of integers" if feature.encoding is ValueEncoding.INT else "not a list of hexadecimal ids"
    )
    return items.alias(name), Check(feature.name, message, _mask(bad))


def conform(
    frame: pl.DataFrame, schema: Schema, label_mapping: dict[str, int] | None = None
) -> tuple[pl.DataFrame, list[Check]]:
    """Convert the schema's columns of `frame` to their promised types (other columns are dropped).

    Args:
        frame: raw columns, at least the schema's.
        schema: what the columns are.
        label_mapping: text label -> 0/1 (default: the numbers 0 and 1).

    Returns:
        The typed frame (columns in `schema_columns` order; invalid cells are null) and the checks
        flagging rows with an invalid label, categorical or numeric value, in column order.
    """
    columns: list[pl.Series] = []
    checks: list[Check] = []
    label, check = to_label(frame.get_column(schema.label), schema.label, label_mapping)
    columns.append(label)
    checks.append(check)
    for feature in schema.categorical:
        raw = frame.get_column(feature.name)
        if feature.multivalent:
            column, check = to_bag(raw, feature)
            checks.append(check)
        elif feature.encoding is ValueEncoding.INT:
            column, check = to_int(raw, feature.name)
            checks.append(check)
        elif feature.encoding is ValueEncoding.HEX:
            column, check = to_hex(raw, feature.name)
            checks.append(check)
        else:
            column = to_string(raw)
        columns.append(column)
    for numeric in schema.numeric:
        column, check = to_float(frame.get_column(numeric.name), numeric.name)
        columns.append(column)
        checks.append(check)
    return pl.DataFrame(columns), checks


def missing_columns(columns: list[str] | tuple[str, ...], schema: Schema) -> list[str]:
    """The schema's columns that are not among `columns`."""
    have = set(columns)
    return [c for c in schema_columns(schema) if c not in have]


def conform_chunks(
    chunks: Iterable[TextChunk],
    schema: Schema,
    path: str | Path,
    bad_rows: BadRows,
    label_mapping: dict[str, int] | None = None,
    lines_are_rows: bool = False,
) -> Iterator[TextChunk]:
    """`conform` every chunk and drop (report) its invalid rows."""
    for chunk in chunks:
        frame, checks = conform(chunk.frame, schema, label_mapping)
        yield reject_rows(TextChunk(frame, chunk.lines), checks, path, bad_rows, lines_are_rows)
