"""Raw columns (text, or Parquet types) -> the typed columns a `Schema` promises, with row checks.

Each column gets a `Conversion`: a polars expression for the typed value and one flagging the rows whose
raw value does not convert. All of a frame's conversions run in one `select` (one pass, parallel over
columns, no per-column call overhead); the flags become `Check`s that readers hand to `reject_rows`,
which reports and drops those rows. Messages stay generic ("not a finite number", not "'abc' is not a
number") so that skipped rows group by reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Unpack

import numpy as np
import polars as pl

from featmux.data.errors import BadRows
from featmux.data.text import (
    Check,
    ReadOptions,
    TextChunk,
    TextFormat,
    iter_text,
    options_bad_rows,
    reject_rows,
)
from featmux.features import CategoricalFeature, Schema, ValueEncoding

LABEL_MESSAGE = "label must be 0 or 1"
_HEX = r"^[0-9a-fA-F]{1,16}$"  # fingerprints are 64-bit: at most 16 hex digits

# a format's own work on a raw chunk before it is converted: the frame to convert, and row checks of its own
Prepare = Callable[[pl.DataFrame], tuple[pl.DataFrame, list[Check]]]


class Conversion(NamedTuple):
    """How one raw column becomes a typed one: `value` (aliased to `name`) and `bad` (None: never bad)."""

    name: str
    value: pl.Expr
    bad: pl.Expr | None
    message: str


def schema_columns(schema: Schema) -> list[str]:
    """Column order of every frame a reader yields: label, categorical features, numeric features."""
    return [schema.label, *schema.feature_names, *(f.name for f in schema.numeric)]


def _is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)


def label_conversion(name: str, dtype: pl.DataType, mapping: dict[str, int] | None = None) -> Conversion:
    """A 0/1 Int8 label from text ("0", "1", "1.0"), numbers or booleans; or text via `mapping`."""
    column = pl.col(name)
    if mapping is not None:
        label = column.replace_strict(
            list(mapping), list(mapping.values()), default=None, return_dtype=pl.Int8
        )
        return Conversion(name, label, label.is_null(), LABEL_MESSAGE)
    number = column.cast(pl.Float64, strict=False)
    valid = number.is_in([0.0, 1.0]).fill_null(False)
    return Conversion(name, number.cast(pl.Int8, strict=False), ~valid, LABEL_MESSAGE)


def float_conversion(name: str, dtype: pl.DataType) -> Conversion:
    """Float64; null -> null (missing), NaN -> null in `apply`; text that is not a finite number is bad."""
    message = "not a finite number"
    column = pl.col(name)
    if _is_text(dtype):
        number = column.cast(pl.Float64, strict=False)
        return Conversion(
            name, number, number.is_null() & column.is_not_null() | number.is_infinite(), message
        )
    if dtype.is_numeric() or dtype == pl.Boolean:
        number = column.cast(pl.Float64)
        return Conversion(name, number, number.is_infinite(), message)
    return Conversion(name, pl.lit(None, pl.Float64), column.is_not_null(), message)


def int_conversion(name: str, dtype: pl.DataType) -> Conversion:
    """Int64; null (and NaN) -> null (missing); anything that is not an integer is bad."""
    message = "not an integer"
    column = pl.col(name)
    if _is_text(dtype):
        number = column.cast(pl.Int64, strict=False)
        return Conversion(name, number, number.is_null() & column.is_not_null(), message)
    if dtype == pl.UInt64:  # fingerprints are int64: keep the bits of ids >= 2^63
        return Conversion(name, column.reinterpret(signed=True), None, message)
    if dtype.is_integer() or dtype == pl.Boolean:
        return Conversion(name, column.cast(pl.Int64), None, message)
    if dtype.is_float():
        whole = column.is_finite() & (column.round(0) == column)
        return Conversion(
            name, pl.when(whole).then(column).cast(pl.Int64), ~whole & ~column.is_nan(), message
        )
    return Conversion(name, pl.lit(None, pl.Int64), column.is_not_null(), message)


def hex_conversion(name: str) -> Conversion:
    """String hexadecimal ids; text that `featmux.hashing.fingerprint` cannot parse as a 64-bit hex is bad."""
    column = pl.col(name).cast(pl.String)
    parsed = column.str.to_integer(base=16, strict=False, dtype=pl.UInt64)  # the parse the fingerprint uses
    return Conversion(name, column, parsed.is_null() & column.is_not_null(), "not a hexadecimal id")


def number_text(value: pl.Expr) -> pl.Expr:
    """Floats as text, integral ones written as integers ("123", never "123.0"); NaN -> null (missing).

    A column that is Float64 in one Parquet file (pandas turns integer columns with NaNs into floats)
    and Int64 in another must fingerprint its values the same.
    """
    whole = value.is_finite() & (value.round(0) == value) & (value.abs() < 2.0**63)
    as_int = value.cast(pl.Int64, strict=False).cast(pl.String)
    return pl.when(whole).then(as_int).when(value.is_nan()).then(None).otherwise(value.cast(pl.String))


def string_conversion(name: str, dtype: pl.DataType = pl.String) -> Conversion:
    """String (text columns were already cleaned: empty -> null); floats as `number_text`."""
    column = pl.col(name)
    return Conversion(name, number_text(column) if dtype.is_float() else column.cast(pl.String), None, "")


def bag_conversion(feature: CategoricalFeature, dtype: pl.DataType) -> Conversion:
    """A multivalent column: List(String), or List(Int64) for INT; empty items dropped, missing -> [].

    Text cells are split at `feature.separator`; list columns (Parquet) are used as they are.
    """
    name = feature.name
    if isinstance(dtype, pl.List):
        inner = dtype.inner
        if feature.encoding is ValueEncoding.INT and (inner.is_integer() or inner == pl.Boolean):
            # integers as they are; UInt64 ids >= 2^63 keep their bits, as univalent ones do
            element = pl.element().reinterpret(signed=True) if inner == pl.UInt64 else pl.element()
            ints = pl.col(name).list.eval(element.cast(pl.Int64).drop_nulls())
            empty = pl.lit(pl.Series([[]], dtype=pl.List(pl.Int64)))
            return Conversion(name, ints.fill_null(empty), None, "not a list of integers")
        as_text = number_text(pl.element()) if inner.is_float() else pl.element().cast(pl.String)
        items = pl.col(name).list.eval(as_text)
    else:
        items = pl.col(name).cast(pl.String).fill_null("").str.split(feature.separator)
    item = pl.element().str.strip_chars()
    items = items.list.eval(item.filter(item != "")).fill_null(
        pl.lit(pl.Series([[]], dtype=pl.List(pl.String)))
    )
    if feature.encoding is ValueEncoding.INT:
        ints = items.list.eval(pl.element().cast(pl.Int64, strict=False))
        bad = ints.list.eval(pl.element().is_null()).list.any()
        return Conversion(name, ints.list.eval(pl.element().drop_nulls()), bad, "not a list of integers")
    if feature.encoding is ValueEncoding.HEX:
        parsed = items.list.eval(pl.element().str.to_integer(base=16, strict=False, dtype=pl.UInt64))
        bad = parsed.list.eval(pl.element().is_null()).list.any()
        return Conversion(name, items, bad, "not a list of hexadecimal ids")
    return Conversion(name, items, None, "")


def clean_text(frame: pl.DataFrame, names: Iterable[str], strip: bool) -> pl.DataFrame:
    """Text columns with surrounding whitespace removed (if `strip`) and empty strings as null.

    Categorical/Enum columns (dictionary-encoded Parquet strings) become plain String. Run as a stage of
    its own: conversions then read the cleaned columns with simple, fast expressions.
    """
    exprs = []
    for name in names:
        dtype = frame.schema[name]
        if isinstance(dtype, pl.Categorical | pl.Enum):
            exprs.append(pl.col(name).cast(pl.String).replace("", None))
        elif dtype == pl.String and strip:
            exprs.append(pl.col(name).str.strip_chars().replace("", None))
    return frame.with_columns(exprs) if exprs else frame


def apply(frame: pl.DataFrame, conversions: Sequence[Conversion]) -> tuple[pl.DataFrame, list[Check]]:
    """Run `conversions` on `frame` in one select.

    Returns:
        The typed columns (in `conversions` order) and one `Check` per conversion that can fail.
    """
    flagged = [(i, c) for i, c in enumerate(conversions) if c.bad is not None]
    flags = [c.bad.fill_null(False).alias(f"__bad_{i}") for i, c in flagged]  # type: ignore[union-attr]
    out = frame.select([c.value.alias(c.name) for c in conversions] + flags)
    checks = [Check(c.name, c.message, out.get_column(f"__bad_{i}").to_numpy()) for i, c in flagged]
    out = out.select([c.name for c in conversions])
    # NaN ("nan" in text, NaN in Parquet) means missing; fill only where present, filling costs a copy
    nan = [
        name
        for name, dtype in out.schema.items()
        if dtype == pl.Float64 and out.get_column(name).is_nan().any()
    ]
    return (out.with_columns(pl.col(nan).fill_nan(None)) if nan else out), checks


def conversions(
    schema: Schema, dtypes: dict[str, pl.DataType], label_mapping: dict[str, int] | None = None
) -> list[Conversion]:
    """The conversion of every schema column, in `schema_columns` order.

    Args:
        schema: what the columns are.
        dtypes: the raw dtype of each column (a frame's `.schema`).
        label_mapping: text label -> 0/1 (default: the numbers 0 and 1).
    """
    out = [label_conversion(schema.label, dtypes[schema.label], label_mapping)]
    for feature in schema.categorical:
        dtype = dtypes[feature.name]
        if feature.multivalent:
            out.append(bag_conversion(feature, dtype))
        elif feature.encoding is ValueEncoding.INT:
            out.append(int_conversion(feature.name, dtype))
        elif feature.encoding is ValueEncoding.HEX:
            out.append(hex_conversion(feature.name))
        else:
            out.append(string_conversion(feature.name, dtype))
    out += [float_conversion(f.name, dtypes[f.name]) for f in schema.numeric]
    return out


def to_int(values: pl.Series, field: str) -> tuple[pl.Series, Check]:
    """`int_conversion` of one Series (named `field`; text is stripped first)."""
    frame = clean_text(values.rename(field).to_frame(), [field], strip=True)
    frame, checks = apply(frame, [int_conversion(field, frame.schema[field])])
    bad = checks[0] if checks else Check(field, "not an integer", np.zeros(values.len(), dtype=bool))
    return frame.get_column(field), bad


def missing_columns(columns: Iterable[str], schema: Schema) -> list[str]:
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
    strip: bool = True,
    prepare: Prepare | None = None,
) -> Iterator[TextChunk]:
    """Convert the schema's columns of every chunk to their promised types and drop (report) invalid rows.

    Other columns are dropped; the frames have the `schema_columns` order. `prepare` (if given) first turns
    each raw frame into the one to convert; its checks are reported right after the label's, before those
    of the schema's columns (they say why a feature is missing).

    Args:
        chunks: raw columns (at least the schema's) with their line numbers.
        schema: what the columns are.
        path: the file, named in errors.
        bad_rows: where invalid rows go.
        label_mapping: text label -> 0/1 (default: the numbers 0 and 1).
        lines_are_rows: the chunks' `lines` are 0-based row indices (Parquet).
        strip: remove whitespace around text values first (off for formats that never pad, it costs a copy).
        prepare: the format's own work on each raw frame.
    """
    built: dict[tuple, list[Conversion]] = {}  # expressions are built once per raw dtypes, not per chunk
    columns = schema_columns(schema)
    for chunk in chunks:
        frame, own = prepare(chunk.frame) if prepare is not None else (chunk.frame, [])
        frame = clean_text(frame, columns, strip)
        dtypes = dict(frame.schema)
        key = tuple(dtypes.items())
        if key not in built:
            built[key] = conversions(schema, dtypes, label_mapping)
        frame, checks = apply(frame, built[key])
        checks = [*checks[:1], *own, *checks[1:]]  # checks[0] is the label's
        yield reject_rows(TextChunk(frame, chunk.lines), checks, path, bad_rows, lines_are_rows)


def text_chunks(
    path: str | Path,
    fmt: TextFormat,
    schema: Schema,
    *,
    label_mapping: dict[str, int] | None = None,
    strip: bool = True,
    prepare: Prepare | None = None,
    **options: Unpack[ReadOptions],
) -> Iterator[TextChunk]:
    """Typed rows of a delimited text file with their line numbers: `iter_text`, then `conform_chunks`.

    Args:
        path: the file.
        fmt: its layout.
        schema: the columns to read and their types.
        label_mapping: text label -> 0/1 (default: the numbers 0 and 1).
        strip: remove whitespace around text values first (off for formats that never pad).
        prepare: the format's own work on each raw chunk (see `conform_chunks`).
        **options: the `ReadOptions` (chunk_rows, bad_rows, block_bytes, line_filter).

    Returns:
        An iterator of `TextChunk`s with the schema's columns (`schema_columns` order); chunk sizes vary.
    """
    bad_rows = options_bad_rows(options)
    text = iter_text(path, fmt, **{**options, "bad_rows": bad_rows})
    return conform_chunks(text, schema, path, bad_rows, label_mapping, strip=strip, prepare=prepare)
