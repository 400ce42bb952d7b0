"""Batch scoring of a file, streamed: `featmux score ARTEFACT DATA --out FILE`.

DATA is read chunk by chunk by featmux's own readers (a CSV/Parquet table, or any dataset format with
`dataset=`), so memory stays at a few chunks whatever the file size, and bad rows are handled as in
training: the first stops the run with a `DataError` naming file, line and field, or, with
`skip_bad_rows`, each is counted.

The output has one row per input row, in input order (blank lines and a header are not rows), with one
column `score`, the click probability. A skipped bad row gets an empty score (null in Parquet), so the
output stays aligned with the input line for line. The output is Parquet when its name ends in
`.parquet`, else CSV.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from featmux.atomic import atomic_open
from featmux.data.encoded import encode_frame
from featmux.data.errors import BadRowPolicy, BadRows
from featmux.data.readers.table import csv_format, table_chunks
from featmux.data.text import TextChunk, rechunk
from featmux.serving.predictor import Predictor

DEFAULT_CHUNK_ROWS = 65_536
TABLE_FORMATS = ("csv", "parquet")  # `dataset` values read with the model's own schema
_FORMAT_OPTIONS = ("separator", "header", "names", "encoding")


@dataclass(frozen=True)
class ScoreSummary:
    """What `score_file` did.

    Args:
        rows: input rows (= output rows).
        scored: rows with a score.
        skipped: bad rows skipped (empty score).
        seconds: wall time, reading and writing included.
        bad_rows: the skipped rows by reason (`BadRows.summary`).
    """

    rows: int
    scored: int
    skipped: int
    seconds: float
    bad_rows: str

    @property
    def rows_per_second(self) -> float:
        """Input rows per second of wall time."""
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


class _Positions:
    """A line filter that keeps every row and remembers their positions, to place the skipped ones."""

    def __init__(self) -> None:
        self._seen: list[np.ndarray] = []

    def __call__(self, lines: np.ndarray) -> np.ndarray:
        self._seen.append(np.asarray(lines, dtype=np.int64).copy())
        return np.ones(len(lines), dtype=bool)

    def take_until(self, last: int | None) -> np.ndarray:
        """The positions seen up to `last` (all when None), removed from the record."""
        seen = np.concatenate(self._seen) if self._seen else np.zeros(0, dtype=np.int64)
        cut = seen.size if last is None else int(np.searchsorted(seen, last, side="right"))
        self._seen = [seen[cut:]] if cut < seen.size else []
        return seen[:cut]


def _chunks(
    predictor: Predictor,
    data: Path,
    dataset: str | None,
    options: Mapping[str, Any],
    bad_rows: BadRows,
    positions: _Positions,
    chunk_rows: int,
) -> Iterator[TextChunk]:
    if dataset is None or dataset in TABLE_FORMATS:
        unknown = sorted(set(options) - set(_FORMAT_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for a table; valid options are {list(_FORMAT_OPTIONS)}"
            )
        chunks = table_chunks(
            data,
            predictor.schema,
            fmt=csv_format(**options),
            label_required=False,
            chunk_rows=chunk_rows,
            bad_rows=bad_rows,
            line_filter=positions,
        )
        return rechunk(chunks, chunk_rows)
    from featmux.data.sources import open_source

    split = str(options.get("split", "train"))
    given = {k: v for k, v in options.items() if k != "split"}
    given.setdefault("fractions", (1.0, 0.0, 0.0))  # a file is scored whole, not carved into splits
    source = open_source(dataset, data, bad_rows=bad_rows, **given)
    return source.chunks(split, chunk_rows, line_filter=positions)


def _writer(out: Path, sink: Any) -> tuple[Any, pa.Schema]:
    schema = pa.schema([pa.field("score", pa.float32())])
    if out.suffix == ".parquet":
        return pq.ParquetWriter(sink, schema), schema
    return pacsv.CSVWriter(sink, schema), schema


def score_file(
    predictor: Predictor,
    data: str | Path,
    out: str | Path,
    dataset: str | None = None,
    options: Mapping[str, Any] | None = None,
    skip_bad_rows: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = False,
) -> ScoreSummary:
    """Score every row of `data` into `out` (see the module docstring for the output).

    Args:
        predictor: the model (`featmux.load`).
        data: a CSV or Parquet table with the model's feature columns (the label may be absent), or a
            file of dataset format `dataset`.
        out: the output file (.parquet, else CSV); written atomically.
        dataset: None (a table), or a source name such as "frappe" (see `featmux.data.sources`).
        options: for a table: `separator`, `header`, `names`, `encoding`; for a dataset: its source
            options, plus `split` (default "train", which for a single file is the whole file).
        skip_bad_rows: skip and count bad rows (empty score) instead of stopping at the first.
        chunk_rows: rows read, encoded and scored at a time (memory is a few chunks).
        progress: show a progress bar (rows) on stderr.

    Returns:
        The counts and time.

    Raises:
        DataError: a bad row (without `skip_bad_rows`), naming file, line and field.
    """
    started = time.perf_counter()
    data, out = Path(data), Path(out)
    if not data.exists():
        raise FileNotFoundError(f"{data} does not exist")
    bad_rows = BadRows(BadRowPolicy.SKIP if skip_bad_rows else BadRowPolicy.RAISE)
    positions = _Positions()
    chunks = _chunks(predictor, data, dataset, dict(options or {}), bad_rows, positions, chunk_rows)
    rows = scored = 0
    with atomic_open(out) as sink, tqdm(unit=" rows", disable=not progress, unit_scale=True) as bar:
        writer, schema = _writer(out, sink)

        def emit(lines: np.ndarray, scores: np.ndarray | None, upto: int | None) -> None:
            nonlocal rows
            every = positions.take_until(upto)
            column = np.full(every.size, np.nan, dtype=np.float32)
            if scores is not None:
                column[np.searchsorted(every, lines)] = scores
            mask = np.isnan(column)
            writer.write_table(pa.table({"score": pa.array(column, mask=mask)}, schema=schema))
            rows += every.size
            bar.update(every.size)

        for chunk in chunks:
            scores = predictor.predict_encoded(encode_frame(chunk.frame, predictor.schema))
            emit(chunk.lines, scores, int(chunk.lines[-1]))
            scored += scores.size
        emit(np.zeros(0, dtype=np.int64), None, None)  # skipped rows after the last scored one
        writer.close()
    return ScoreSummary(rows, scored, rows - scored, time.perf_counter() - started, bad_rows.summary())
