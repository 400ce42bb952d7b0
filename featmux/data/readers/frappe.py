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

import polars as pl

from featmux.data.errors import BadRows
from featmux.data.readers._convert import conform
from featmux.data.text import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_CHUNK_ROWS,
    Check,
    LineFilter,
    TextChunk,
    TextFormat,
    frames,
    iter_text,
    rechunk,
    reject_rows,
)
from featmux.features import CategoricalFeature, Schema, ValueEncoding

LABEL = "label"
FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")
LABELS = {"1": 1, "-1": 0, "+1": 1, "0": 0}
FORMAT = TextFormat(" ", names=(LABEL, *FIELDS))
_PAIR = r"^(\d+):1(?:\.0*)?$"  # index:1 (a libFM value of 1, possibly written 1.0)


def frappe_schema() -> Schema:
    """The Frappe schema: `label` and the 10 fields as libFM indices (ValueEncoding.INT)."""
    return Schema(LABEL, tuple(CategoricalFeature(name, ValueEncoding.INT) for name in FIELDS))


def frappe_chunks(
    path: str | Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    bad_rows: BadRows | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    line_filter: LineFilter | None = None,
) -> Iterator[TextChunk]:
    """Typed Frappe rows with their line numbers (chunks of at most `chunk_rows`, sizes vary).

    Args:
        path: a Frappe libFM file.
        chunk_rows: at most this many rows per chunk.
        bad_rows: where malformed rows go (default: raise at the first).
        block_bytes: bytes read at a time.
        line_filter: selects the lines to read by line number (e.g. one split of the file).

    Returns:
        An iterator of `TextChunk`s with the columns of `frappe_schema()`.
    """
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    schema = frappe_schema()
    for chunk in iter_text(
        path,
        FORMAT,
        chunk_rows=chunk_rows,
        bad_rows=bad_rows,
        block_bytes=block_bytes,
        line_filter=line_filter,
    ):
        raw = chunk.frame
        indices = raw.select(LABEL, *(pl.col(name).str.extract(_PAIR, 1) for name in FIELDS))
        pair_checks = [
            Check(name, "expected index:1", (indices[name].is_null() & raw[name].is_not_null()).to_numpy())
            for name in FIELDS
        ]
        frame, checks = conform(indices, schema, LABELS, strip=False)
        checks = [checks[0], *pair_checks, *checks[1:]]
        yield reject_rows(TextChunk(frame, chunk.lines), checks, path, bad_rows)


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
