"""Avazu CTR Prediction (Kaggle 2014) rows.

Comma separated, 24 columns `id,click,hour,C1,banner_pos,site_id,...,C21`, with or without the header
line (detected). `id` is dropped (unique per row, no signal); `hour` (`YYMMDDHH`, UTC) is expanded into
the categorical features `hour_of_day` (0-23), `weekday` (1 = Monday .. 7 = Sunday) and `is_weekend`
(0/1), and not kept raw (every hour is new at test time). The anonymised ids (site_id, app_id,
device_ip, ...) are 8-digit hex in the released data, but nothing in the format promises it, so they are
fingerprinted as strings; C1, banner_pos, device_type, device_conn_type and C14..C21 are small
integers (ValueEncoding.INT; C20 uses -1 for missing, kept as its own value).
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
    Check,
    ReadOptions,
    TextChunk,
    TextFormat,
    frames,
    peek_line,
    rechunk,
)
from featmux.features import CategoricalFeature, Schema, ValueEncoding

LABEL = "click"
COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
    "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)  # fmt: skip
HOUR_FEATURES = ("hour_of_day", "weekday", "is_weekend")
STRING_FIELDS = (
    "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
    "device_id", "device_ip", "device_model",
)  # fmt: skip
INT_FIELDS = (
    "C1", "banner_pos", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)  # fmt: skip


def avazu_schema() -> Schema:
    """The Avazu schema: `click`, then hour_of_day/weekday/is_weekend and the 21 raw categoricals.

    Features keep the file's column order, with the three hour features in place of `hour`.
    """
    features = [CategoricalFeature(name, ValueEncoding.INT) for name in HOUR_FEATURES]
    for name in COLUMNS[3:]:
        encoding = ValueEncoding.STRING if name in STRING_FIELDS else ValueEncoding.INT
        features.append(CategoricalFeature(name, encoding))
    return Schema(LABEL, tuple(features))


def avazu_format(path: str | Path) -> TextFormat:
    """The layout of an Avazu file: comma separated, 24 fields, header line detected (`id,click,...`).

    Args:
        path: the file.

    Returns:
        Its `TextFormat`.
    """
    header = peek_line(path).split(",", 1)[0].strip() == "id"
    return TextFormat(",", header=header, names=COLUMNS)


def _expand_hour(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[Check]]:
    hour = frame.get_column("hour").str.strip_chars()
    well_formed = hour.str.contains(r"^\d{8}$").fill_null(False)
    date = hour.str.slice(0, 6).str.to_date("%y%m%d", strict=False)
    hour_of_day = hour.str.slice(6, 2).cast(pl.Int64, strict=False)
    valid = well_formed & date.is_not_null() & (hour_of_day < 24).fill_null(False)
    weekday = date.dt.weekday().cast(pl.Int64)
    expanded = frame.with_columns(
        hour_of_day.alias("hour_of_day"),
        weekday.alias("weekday"),
        (weekday >= 6).cast(pl.Int64).alias("is_weekend"),
    )
    return expanded, [Check("hour", "hour must be YYMMDDHH", ~valid.to_numpy())]


def avazu_chunks(path: str | Path, **options: Unpack[ReadOptions]) -> Iterator[TextChunk]:
    """Typed Avazu rows with their line numbers (chunks of at most `chunk_rows`, sizes vary).

    Args:
        path: an Avazu CSV, with or without header.
        **options: the `ReadOptions` (chunk_rows, bad_rows, block_bytes, line_filter).

    Returns:
        An iterator of `TextChunk`s with the columns of `avazu_schema()`.
    """
    # a generator, so the file is opened (its header sniffed) only when reading starts; the hour check
    # comes right after the label's: it feeds the first three features
    yield from text_chunks(
        path, avazu_format(path), avazu_schema(), strip=False, prepare=_expand_hour, **options
    )


def read_avazu(
    path: str | Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, bad_rows: BadRows | None = None
) -> Iterator[pl.DataFrame]:
    """Stream an Avazu file as frames of exactly `chunk_rows` rows (the last may be shorter).

    Args:
        path: an Avazu CSV, with or without header.
        chunk_rows: rows per frame.
        bad_rows: where malformed rows go (default: raise a `DataError` at the first).

    Returns:
        An iterator of frames: `click` Int8, hour_of_day/weekday/is_weekend and the small-int columns
        Int64, the id columns String.
    """
    return frames(rechunk(avazu_chunks(path, chunk_rows=chunk_rows, bad_rows=bad_rows), chunk_rows))
