"""Any CSV or Parquet table described by a `Schema` (the user's own data).

CSV: a separator (one character, or several such as "::"), a header line or explicit column names, and
double-quoted fields (one line per row). Parquet: read in record batches with pyarrow, so a large file
never sits in memory whole. Columns outside the schema are ignored; a schema column missing from the
file is a `DataError` naming the file and the column. Labels must be 0/1 (numbers, "0"/"1", booleans).
Errors in a Parquet file are located by 0-based row index (`file.parquet[row 17]`). Parquet types may
drift between files: a string feature stored as floats is written like the integers it holds ("123",
not "123.0", NaN missing), so Int64 in one file and Float64 in another give the same values; UInt64 ids
at or above 2^63 keep their 64 bits as int64 in univalent and multivalent columns alike.

Example:
    >>> schema = table_schema("click", categorical=["ad", "site"], numeric=["price"], multivalent=["tags"])
    >>> for frame in read_table("clicks.csv", schema):
    ...     ...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Unpack

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from featmux.data.errors import BadRows, DataError
from featmux.data.readers._convert import (
    Prepare,
    conform_chunks,
    missing_columns,
    schema_columns,
    text_chunks,
)
from featmux.data.text import (
    DEFAULT_CHUNK_ROWS,
    LineFilter,
    ReadOptions,
    TextChunk,
    TextFormat,
    frames,
    options_bad_rows,
    read_header,
    rechunk,
    row_location,
)
from featmux.features import CategoricalFeature, NumericFeature, NumericTransform, Schema, ValueEncoding

_PARQUET_MAGIC = b"PAR1"


def table_schema(
    label: str,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    multivalent: Sequence[str] = (),
    *,
    separator: str = "|",
    encodings: Mapping[str, ValueEncoding | str] | None = None,
    transforms: Mapping[str, NumericTransform | str] | None = None,
) -> Schema:
    """A schema from column names.

    Args:
        label: the 0/1 label column.
        categorical: univalent categorical columns.
        numeric: numeric columns.
        multivalent: categorical columns holding several values per cell, split at `separator`.
        separator: separator between the values of a multivalent cell.
        encodings: column -> ValueEncoding (or its value, e.g. "int"); default STRING.
        transforms: numeric column -> NumericTransform (or its value, e.g. "log1p"); default NONE.

    Returns:
        The schema: categorical features in the order `categorical`, then `multivalent`.

    Raises:
        ValueError: an unknown column in `encodings`/`transforms`, or a schema error (duplicate names...).
    """
    encodings = dict(encodings or {})
    transforms = dict(transforms or {})
    unknown = sorted(set(encodings) - set(categorical) - set(multivalent))
    if unknown:
        raise ValueError(f"encodings name column(s) {unknown} that are not categorical")
    unknown = sorted(set(transforms) - set(numeric))
    if unknown:
        raise ValueError(f"transforms name column(s) {unknown} that are not numeric")
    features = [
        CategoricalFeature(n, ValueEncoding(encodings.get(n, ValueEncoding.STRING))) for n in categorical
    ]
    features += [
        CategoricalFeature(
            n, ValueEncoding(encodings.get(n, ValueEncoding.STRING)), multivalent=True, separator=separator
        )
        for n in multivalent
    ]
    numerics = tuple(
        NumericFeature(n, NumericTransform(transforms.get(n, NumericTransform.NONE))) for n in numeric
    )
    return Schema(label, tuple(features), numerics)


def is_parquet(path: str | Path) -> bool:
    """Whether a file is Parquet, by its magic bytes whatever its name.

    Args:
        path: the file.

    Returns:
        True for Parquet.
    """
    with Path(path).open("rb") as handle:
        return handle.read(4) == _PARQUET_MAGIC


def csv_format(
    separator: str = ",",
    header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> TextFormat:
    """The `TextFormat` of a user CSV: quoted fields unless the separator is several characters.

    Args:
        separator: field separator.
        header: the first line holds the column names.
        names: the column names (required without header).
        encoding: "utf-8" or "latin-1".

    Returns:
        The format.
    """
    if not header and names is None:
        raise ValueError("a CSV table without header needs the column names")
    quoting = len(separator.encode("utf-8")) == 1 and separator != '"'
    return TextFormat(
        separator,
        header=header,
        encoding=encoding,
        quoting=quoting,
        names=tuple(names) if names is not None else None,
    )


def _parquet_batches(
    handle: pq.ParquetFile, columns: list[str], chunk_rows: int, line_filter: LineFilter | None, path: Path
) -> Iterator[TextChunk]:
    start = 0
    batches = handle.iter_batches(batch_size=chunk_rows, columns=columns)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as err:  # a damaged page: pyarrow's error, located
            raise DataError(
                row_location(path, start), None, None, f"unreadable Parquet data ({err})"
            ) from err
        if batch is None:
            return
        frame = pl.DataFrame(pl.from_arrow(batch))
        rows = np.arange(start, start + frame.height, dtype=np.int64)  # 0-based row index
        start += frame.height
        if line_filter is not None:
            keep = np.asarray(line_filter(rows), dtype=bool)
            frame, rows = frame.filter(pl.Series(keep)), rows[keep]
        yield TextChunk(frame, rows)


def _constant_label(label: str) -> Prepare:
    """A `Prepare` step giving frames without a label column the label 0 (for tables that are scored)."""

    def add(frame: pl.DataFrame) -> tuple[pl.DataFrame, list]:
        return frame.with_columns(pl.lit("0").alias(label)), []

    return add


def _label_optional(missing: list[str], label: str, required: bool) -> tuple[list[str], Prepare | None]:
    """The missing columns that are an error, and the step adding the label when it may be absent."""
    if required or label not in missing:
        return missing, None
    return [c for c in missing if c != label], _constant_label(label)


def table_chunks(
    path: str | Path,
    schema: Schema,
    *,
    fmt: TextFormat | None = None,
    label_required: bool = True,
    **options: Unpack[ReadOptions],
) -> Iterator[TextChunk]:
    """Typed rows of a CSV or Parquet table with their line numbers (Parquet: 0-based row indices).

    Args:
        path: a CSV (any name) or Parquet file (detected by its magic bytes).
        schema: the columns to read and their types.
        fmt: the CSV layout (default: `csv_format()`, comma with header); ignored for Parquet.
        label_required: False for tables that are only scored: a file without the label column then
            reads with label 0 on every row (a file that has the column still has it checked).
        **options: the `ReadOptions` (chunk_rows, bad_rows, block_bytes, line_filter); for Parquet,
            line_filter selects by 0-based row index and block_bytes is not used.

    Returns:
        An iterator of `TextChunk`s with the schema's columns (`schema_columns` order).

    Raises:
        DataError: a schema column is missing, or a row is malformed (under `BadRowPolicy.RAISE`).
    """
    path = Path(path)
    if is_parquet(path):
        try:
            handle = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:  # truncated or not Parquet after all
            raise DataError(path, None, None, f"not a readable Parquet file ({err})") from err
        names = handle.schema_arrow.names
        missing, prepare = _label_optional(missing_columns(names, schema), schema.label, label_required)
        if missing:
            raise DataError(path, None, missing[0], f"column missing from the file (it has {names})")
        columns = [c for c in schema_columns(schema) if prepare is None or c != schema.label]
        chunk_rows = options.get("chunk_rows", DEFAULT_CHUNK_ROWS)
        batches = _parquet_batches(handle, columns, chunk_rows, options.get("line_filter"), path)
        return conform_chunks(
            batches, schema, path, options_bad_rows(options), lines_are_rows=True, prepare=prepare
        )
    fmt = fmt if fmt is not None else csv_format()
    missing = missing_columns(read_header(path, fmt), schema)
    missing, prepare = _label_optional(missing, schema.label, label_required)
    if missing:
        line = 1 if fmt.header else None
        raise DataError(path, line, missing[0], "column missing from the header")
    return text_chunks(path, fmt, schema, prepare=prepare, **options)


def read_table(
    path: str | Path,
    schema: Schema,
    *,
    fmt: TextFormat | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    bad_rows: BadRows | None = None,
) -> Iterator[pl.DataFrame]:
    """Stream a CSV or Parquet table as frames of exactly `chunk_rows` rows (the last may be shorter).

    Args:
        path: a CSV or Parquet file.
        schema: the columns to read and their types.
        fmt: the CSV layout (default: comma separated with header, quoted fields).
        chunk_rows: rows per frame.
        bad_rows: where malformed rows go (default: raise a `DataError` at the first).

    Returns:
        An iterator of frames with exactly the schema's columns: label Int8, categorical String (Int64
        for INT), multivalent List(String) (List(Int64) for INT), numeric Float64 (null = missing).
    """
    chunks = table_chunks(path, schema, fmt=fmt, chunk_rows=chunk_rows, bad_rows=bad_rows)
    return frames(rechunk(chunks, chunk_rows))
