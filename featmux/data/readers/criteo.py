"""Criteo Display Advertising Challenge (Kaggle 2014) rows.

Two layouts are read, detected from the first line:
- Kaggle `train.txt`: tab separated, no header, 40 fields `label, I1..I13, C1..C26`;
- CSV with the header `label,I1,...,C26` (DeepCTR's `criteo_sample.txt`, written by pandas, so the
  integers appear as floats such as `260.0`).

Empty fields are missing. I1..I13 are counts (they may be negative) -> Float64 with LOG1P; C1..C26 are
32-bit ids as hex strings -> ValueEncoding.HEX. A label other than 0/1, a non-numeric I-field or a
non-hex C-field is a `DataError` naming the line and field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Unpack

import polars as pl

from featmux.data.errors import BadRows
from featmux.data.readers._convert import text_chunks
from featmux.data.text import (
    DEFAULT_CHUNK_ROWS,
    ReadOptions,
    TextChunk,
    TextFormat,
    frames,
    peek_line,
    rechunk,
)
from featmux.features import CategoricalFeature, NumericFeature, NumericTransform, Schema, ValueEncoding

LABEL = "label"
INTEGER_FIELDS = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL_FIELDS = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = (LABEL, *INTEGER_FIELDS, *CATEGORICAL_FIELDS)


def criteo_schema() -> Schema:
    """The Criteo schema: `label`, C1..C26 (HEX) and I1..I13 (numeric, LOG1P)."""
    return Schema(
        LABEL,
        tuple(CategoricalFeature(name, ValueEncoding.HEX) for name in CATEGORICAL_FIELDS),
        tuple(NumericFeature(name, NumericTransform.LOG1P) for name in INTEGER_FIELDS),
    )


def criteo_format(path: str | Path) -> TextFormat:
    """The layout of a Criteo file: tab without header (Kaggle) or comma with a `label,...` header.

    Args:
        path: the file.

    Returns:
        Its `TextFormat` (40 named fields).
    """
    first = peek_line(path)
    separator = "\t" if "\t" in first else ","
    header = first.split(separator, 1)[0].strip() == LABEL
    return TextFormat(separator, header=header, names=COLUMNS)


def criteo_chunks(path: str | Path, **options: Unpack[ReadOptions]) -> Iterator[TextChunk]:
    """Typed Criteo rows with their line numbers (chunks of at most `chunk_rows`, sizes vary).

    Args:
        path: a Criteo file in either layout.
        **options: the `ReadOptions` (chunk_rows, bad_rows, block_bytes, line_filter).

    Returns:
        An iterator of `TextChunk`s with the columns of `criteo_schema()`.
    """
    # Kaggle fields are never padded
    return text_chunks(path, criteo_format(path), criteo_schema(), strip=False, **options)


def read_criteo(
    path: str | Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, bad_rows: BadRows | None = None
) -> Iterator[pl.DataFrame]:
    """Stream a Criteo file as frames of exactly `chunk_rows` rows (the last may be shorter).

    Args:
        path: a Criteo file (Kaggle TSV or CSV with header).
        chunk_rows: rows per frame.
        bad_rows: where malformed rows go (default: raise a `DataError` at the first).

    Returns:
        An iterator of frames: `label` Int8, C1..C26 String (hex), I1..I13 Float64 (null = missing).
    """
    return frames(rechunk(criteo_chunks(path, chunk_rows=chunk_rows, bad_rows=bad_rows), chunk_rows))
