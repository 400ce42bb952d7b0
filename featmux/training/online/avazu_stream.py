"""An Avazu-format stream (one CSV per hour) from the synthetic generator, with its known churn and drift."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
import polars as pl

from featmux.data.synthetic import SyntheticConfig
from featmux.training.online.stream import synthetic_rows


def _hex8(values: np.ndarray) -> pl.Series:
    """8-digit lower-case hex strings of a bijective 32-bit scramble of ids < 2^32 (Avazu-like ids)."""
    scrambled = (values.astype(np.uint64) * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    shifts = np.arange(28, -1, -4, dtype=np.uint64)
    nibbles = ((scrambled[:, None] >> shifts) & np.uint64(0xF)).astype(np.uint8)  # [n, 8]
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    return pl.Series(np.ascontiguousarray(digits).view("S8").ravel()).cast(pl.String)


def write_avazu_stream(
    directory: str | Path,
    config: SyntheticConfig,
    partitions: int,
    partition_rows: int,
    first_hour: str = "14102100",
) -> list[Path]:
    """Write the synthetic stream as Avazu-format hour files, one partition per file.

    The 21 raw Avazu categoricals (C1, banner_pos, site_id, ..., C21) take the synthetic features
    C1..C21 in order: the id-like columns (site_id, app_id, device_ip, ...) as 8-digit hex strings, the
    others as integers. `hour` is `YYMMDDHH`, one hour per partition from `first_hour`; `id` is the row
    number. Labels, ID churn and concept drift are the synthetic stream's, so this is an honest
    Avazu-format stream with known drift (the real Avazu sample covers one hour only).

    Args:
        directory: where the files go (created); `<YYMMDDHH>.csv` each, with the Avazu header.
        config: the synthetic stream; it must have exactly 21 categorical features and no numeric.
        partitions: number of hours.
        partition_rows: rows per hour.
        first_hour: the first hour, `YYMMDDHH`.

    Returns:
        The files, in time order.

    Example:
        >>> cards = (7, 7, 4_000, 7_000, 26, 8_000, 500, 36, 100_000, 200_000, 8_000, 5, 4, 2_600, 8, 9,
        ...          435, 4, 68, 172, 60)
        >>> write_avazu_stream("runs/avazu-hours", SyntheticConfig(cardinalities=cards), 12, 100_000)
    """
    from featmux.data.readers.avazu import COLUMNS, STRING_FIELDS

    raw = COLUMNS[3:]
    if len(config.cardinalities) != len(raw) or config.num_numeric:
        raise ValueError(
            f"an Avazu-format stream needs {len(raw)} categorical features ({', '.join(raw)}) and no "
            f"numeric ones; got {len(config.cardinalities)} and {config.num_numeric}"
        )
    start = datetime.datetime.strptime(first_hour, "%y%m%d%H")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in range(partitions):
        hour = (start + datetime.timedelta(hours=p)).strftime("%y%m%d%H")
        (frame,) = synthetic_rows(config, p * partition_rows, partition_rows)
        columns = [
            pl.Series("id", np.arange(p * partition_rows, (p + 1) * partition_rows)).cast(pl.String),
            frame.get_column("label").alias("click"),
            pl.repeat(hour, partition_rows, eager=True).alias("hour"),
        ]
        for name, source in zip(raw, config.feature_names, strict=True):
            ids = frame.get_column(source).to_numpy()
            if ids.max(initial=0) >= 1 << 32:
                raise ValueError(f"{source}: ids reach 2^32; use smaller cardinalities or less churn")
            columns.append(_hex8(ids).alias(name) if name in STRING_FIELDS else pl.Series(name, ids))
        path = directory / f"{hour}.csv"
        tmp = directory / f".{hour}.csv.tmp"
        pl.DataFrame(columns).write_csv(tmp)
        os.replace(tmp, path)
        paths.append(path)
    return paths
