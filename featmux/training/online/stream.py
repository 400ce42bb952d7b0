"""A stream cut into partitions in time order: synthetic row ranges, one file per partition, or one file cut
by rows or by a column's runs (`iter_partitions`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from featmux.data.errors import BadRows
from featmux.data.synthetic import SyntheticConfig, iter_synthetic
from featmux.features import Schema
from featmux.training.online.config import SYNTHETIC, OnlineConfig

_NO_SPLITS = (1.0, 0.0, 0.0)  # read a whole file as the train split (no hash-carved valid/test rows)


@dataclass(frozen=True)
class StreamPartition:
    """One partition of a stream.

    Args:
        index: 0-based position in time order.
        name: what it is (a file name, a row range, `hour_of_day=5`), stored with checkpoints.
        load: reads its rows as frames of bounded size, lazily (skipped partitions cost nothing; a
            directory's file or a synthetic range is never read whole into memory).
        stamp: what its content was when read (the file's size and modification time; "" for the
            synthetic stream, whose content the config decides): a resumed run checks it.

    Example:
        >>> part = next(iter_partitions(config, BadRows())[1])
        >>> part.name, sum(f.height for f in part.load())
    """

    index: int
    name: str
    load: Callable[[], Iterable[pl.DataFrame]] = field(repr=False)
    stamp: str = ""


def file_stamp(path: Path) -> str:
    """`size:mtime_ns` of a file: changes when the file is rewritten."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def synthetic_rows(config: SyntheticConfig, start: int, rows: int) -> list[pl.DataFrame]:
    """Rows [start, start + rows) of the synthetic stream, as one frame."""
    return list(iter_synthetic(config, rows, chunk_rows=rows, start_row=start))


def _source(config: OnlineConfig, path: Path, bad_rows: BadRows) -> Any:
    from featmux.data.sources import open_source

    options = {**config.dataset_options, "fractions": _NO_SPLITS}
    return open_source(config.dataset, path, bad_rows=bad_rows, **options)


def _read_all(config: OnlineConfig, path: Path, bad_rows: BadRows) -> Iterator[pl.DataFrame]:
    return _source(config, path, bad_rows).split("train")


def _pieces(frames: Iterator[pl.DataFrame], column: str) -> Iterator[tuple[Any, pl.DataFrame]]:
    """(value, slice) for each run of equal `column` values inside each frame, in stream order."""
    for frame in frames:
        if frame.height == 0:
            continue
        values = frame.get_column(column)
        runs = values.rle_id().to_numpy()
        starts = np.concatenate(([0], np.flatnonzero(np.diff(runs)) + 1, [frame.height]))
        for lo, hi in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
            yield values[lo], frame.slice(lo, hi - lo)


def _by_column(frames: Iterator[pl.DataFrame], column: str) -> Iterator[tuple[str, Iterator[pl.DataFrame]]]:
    """Runs of equal `column` values in stream order, as (name, its frames), read lazily: a run's
    frames come as the source yields them; moving to the next run first reads past what the caller
    left of the previous one (a skipped partition)."""
    pieces = _pieces(frames, column)
    ahead = next(pieces, None)  # the piece that starts the next run

    def run(value: Any) -> Iterator[pl.DataFrame]:
        nonlocal ahead
        while ahead is not None and ahead[0] == value:
            piece = ahead[1]
            ahead = next(pieces, None)
            yield piece

    while ahead is not None:
        current = run(ahead[0])
        yield f"{column}={ahead[0]}", current
        for _ in current:  # drain what was not read
            pass


def iter_partitions(config: OnlineConfig, bad_rows: BadRows) -> tuple[Schema, Iterator[StreamPartition]]:
    """The schema of a stream and its partitions in time order (at most `config.partitions`).

    Args:
        config: the run (dataset, data and partition options).
        bad_rows: where malformed rows go.

    Returns:
        (schema, partitions); nothing is read before the iterator is advanced, except one file's
        header (or first block) to learn the schema.

    Raises:
        FileNotFoundError: `data` does not exist, or a directory has no partition files.
        ValueError: `partition_column` is not a column of the schema, or a directory is combined with
            `partition_rows` / `partition_column`.
    """
    limit = config.partitions if config.partitions is not None else math.inf
    if config.dataset == SYNTHETIC:
        synthetic = config.synthetic_config()
        from featmux.data.synthetic import synthetic_schema

        rows = config.partition_rows
        assert rows is not None and config.partitions is not None
        parts = (
            StreamPartition(
                p,
                f"rows {p * rows}-{(p + 1) * rows - 1}",
                functools.partial(iter_synthetic, synthetic, rows, start_row=p * rows),
            )
            for p in range(config.partitions)
        )
        return synthetic_schema(synthetic), parts
    assert config.data is not None
    data = Path(config.data)
    if not data.exists():
        raise FileNotFoundError(f"{config.dataset}: {data} does not exist")
    if data.is_dir():
        if config.partition_rows is not None or config.partition_column is not None:
            raise ValueError(
                f"{data} is a directory: each file is a partition (partition_rows and partition_column "
                "cut a single file)"
            )
        files = sorted(
            p for p in data.glob(config.partition_glob) if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise FileNotFoundError(f"{data}: no partition files match {config.partition_glob!r}")
        schema = _source(config, files[0], bad_rows).schema
        parts = (
            StreamPartition(i, f.name, functools.partial(_read_all, config, f, bad_rows), file_stamp(f))
            for i, f in enumerate(files)
            if i < limit
        )
        return schema, parts
    source = _source(config, data, bad_rows)
    schema = source.schema
    columns = [schema.label, *schema.feature_names, *(f.name for f in schema.numeric)]
    if config.partition_column is not None and config.partition_column not in columns:
        raise ValueError(
            f"partition_column {config.partition_column!r} is not a column of {config.dataset}; "
            f"valid columns are {columns}"
        )
    if config.partition_rows is None and config.partition_column is None:
        raise ValueError(
            f"{data} is one file: set partition_rows or partition_column to cut it into partitions"
        )

    stamp = file_stamp(data)

    def parts_of_file() -> Iterator[StreamPartition]:
        if config.partition_rows is not None:
            rows = config.partition_rows
            named = (
                (f"rows {i * rows}-{i * rows + frame.height - 1}", [frame])
                for i, frame in enumerate(source.split("train", chunk_rows=rows))
            )
        else:
            assert config.partition_column is not None
            named = _by_column(source.split("train"), config.partition_column)
        for i, (name, frames) in enumerate(named):
            if i >= limit:
                return
            yield StreamPartition(i, name, functools.partial(iter, frames), stamp)

    return schema, parts_of_file()
