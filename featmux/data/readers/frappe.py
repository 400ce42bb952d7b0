"""Frappe (Baltrunas et al. 2015) in the libFM files of NFM / BARS Frappe_x1.

One sample per line, space separated: `label idx:1 idx:1 ... idx:1` with exactly 10 `index:1` pairs in
a fixed field order (user, item, daytime, weekday, isweekend, homework, cost, weather, country, city).
Label `1` is positive, `-1` a sampled negative (-> 0). The categorical value of a field is its libFM
index (ValueEncoding.INT): indices are global, so they are already distinct across fields. The
validation/test files have CRLF line endings, the (rebuilt) train file LF; both are read the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Unpack

import polars as pl

from featmux.data.errors import BadRows
from featmux.data.readers._convert import text_chunks
from featmux.data.text import DEFAULT_CHUNK_ROWS, Check, ReadOptions, TextChunk, TextFormat, frames, rechunk
from featmux.features import CategoricalFeature, Schema, ValueEncoding

LABEL = "label"
FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")
LABELS = {"1": 1, "-1": 0, "+1": 1, "0": 0}
FORMAT = TextFormat(" ", names=(LABEL, *FIELDS))
_PAIR = r"^(\d+):1(?:\.0*)?$"  # index:1 (a libFM value of 1, possibly written 1.0)


def frappe_schema() -> Schema:
    """The Frappe schema: `label` and the 10 fields as libFM indices (ValueEncoding.INT)."""
    return Schema(LABEL, tuple(CategoricalFeature(name, ValueEncoding.INT) for name in FIELDS))


def _indices(raw: pl.DataFrame) -> tuple[pl.DataFrame, list[Check]]:
    """The libFM index of each `index:1` field, and a check per field flagging the other values."""
    indices = raw.select(LABEL, *(pl.col(name).str.extract(_PAIR, 1) for name in FIELDS))
    checks = [
        Check(name, "expected index:1", (indices[name].is_null() & raw[name].is_not_null()).to_numpy())
        for name in FIELDS
    ]
    return indices, checks


def frappe_chunks(path: str | Path, **options: Unpack[ReadOptions]) -> Iterator[TextChunk]:
    """Typed Frappe rows with their line numbers (chunks of at most `chunk_rows`, sizes vary).

    Args:
        path: a Frappe libFM file.
        **options: the `ReadOptions` (chunk_rows, bad_rows, block_bytes, line_filter).

    Returns:
        An iterator of `TextChunk`s with the columns of `frappe_schema()`.
    """
    return text_chunks(
        path, FORMAT, frappe_schema(), label_mapping=LABELS, strip=False, prepare=_indices, **options
    )


def read_frappe(
    path: str | Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, bad_rows: BadRows | None = None
) -> Iterator[pl.DataFrame]:
    """Stream a Frappe libFM file as frames of exactly `chunk_rows` rows (the last may be shorter).

    Args:
        path: a Frappe libFM file.
        chunk_rows: rows per frame.
        bad_rows: where malformed rows go (default: raise a `DataError` at the first).

    Returns:
        An iterator of frames: `label` Int8 (1 / -1 -> 1 / 0) and the 10 fields as Int64 libFM indices.
    """
    return frames(rechunk(frappe_chunks(path, chunk_rows=chunk_rows, bad_rows=bad_rows), chunk_rows))
