"""Part `pipeline`: rows/s from Criteo TSV and Avazu CSV text into tensors."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featmux.atomic import write_json_atomic
from featmux.benchmarks.speed.workloads import CRITEO_LIKE
from featmux.data.cache import EncodedDataset


def write_criteo_tsv(path: Path, rows: int, seed: int = 0) -> Path:
    """A Kaggle-layout Criteo file (label, I1..I13, C1..C26; tab separated; ~4% empty fields)."""
    import polars as pl

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {"label": (rng.random(rows) < 0.25).astype(np.int8)}
    for j in range(13):
        values = np.floor(np.exp(rng.normal(1.0 + j % 4, 1.5, rows))).astype(np.int64)
        columns[f"I{j + 1}"] = pl.Series(values).set(pl.Series(rng.random(rows) < 0.04), None)
    for j, card in enumerate(CRITEO_LIKE):
        distinct = min(card, 50_000)
        vocab = pl.Series([f"{v:08x}" for v in rng.integers(0, 1 << 32, distinct)])
        pick = np.minimum((np.power(distinct + 1.0, rng.random(rows))).astype(np.int64) - 1, distinct - 1)
        columns[f"C{j + 1}"] = vocab.gather(pick).set(pl.Series(rng.random(rows) < 0.04), None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pl.DataFrame(columns).write_csv(tmp, separator="\t", include_header=False, null_value="")
    os.replace(tmp, path)
    return path


def write_avazu_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """An Avazu-layout CSV with header (id, click, hour, C1, ..., C21): hex ids, small ints, 10 days."""
    import polars as pl

    from featmux.data.readers.avazu import COLUMNS, STRING_FIELDS

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {
        "id": pl.Series(rng.integers(0, 1 << 63, rows, dtype=np.int64)).cast(pl.UInt64),
        "click": (rng.random(rows) < 0.17).astype(np.int8),
        "hour": 14102100 + 100 * rng.integers(0, 10, rows) + rng.integers(0, 24, rows),
    }
    for name in COLUMNS[3:]:
        if name in STRING_FIELDS:
            distinct = 100_000 if name in ("device_ip", "device_id") else 5_000
            vocab = pl.Series([f"{v:08x}" for v in rng.integers(0, 1 << 32, distinct)])
            pick = np.minimum((np.power(distinct + 1.0, rng.random(rows))).astype(np.int64) - 1, distinct - 1)
            columns[name] = vocab.gather(pick)
        else:
            columns[name] = rng.integers(0, 2_000, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pl.DataFrame(columns).select(COLUMNS).write_csv(tmp)
    os.replace(tmp, path)
    return path


def _pipeline_one(name: str, path: Path, cache: Path, batch_size: int) -> dict[str, Any]:
    import shutil

    from featmux.data.cache import chunk_to_batch
    from featmux.data.encoded import encode_frame
    from featmux.data.readers.avazu import avazu_chunks, avazu_schema
    from featmux.data.readers.criteo import criteo_chunks, criteo_schema

    chunks, schema = (criteo_chunks, criteo_schema()) if name == "criteo" else (avazu_chunks, avazu_schema())
    out: dict[str, Any] = {"format": name, "file_bytes": path.stat().st_size}

    start = time.perf_counter()
    rows = 0
    for chunk in chunks(path):
        batch = chunk_to_batch(encode_frame(chunk.frame, schema))  # text -> fingerprints -> tensors
        rows += len(batch)
    out["rows"] = rows
    out["parse_to_tensors_rows_per_s"] = rows / (time.perf_counter() - start)

    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    EncodedDataset.write(cache, schema, (encode_frame(c.frame, schema) for c in chunks(path)))
    out["first_pass_rows_per_s"] = rows / (time.perf_counter() - start)  # parse + fingerprint + write cache

    dataset = EncodedDataset(cache)
    for epoch in range(2):  # epochs after the first: shards from the cache, shuffled batches as tensors
        start = time.perf_counter()
        seen = sum(len(b) for b in dataset.batches(batch_size, shuffle=True, seed=0, epoch=epoch))
        out[f"cached_epoch{epoch + 1}_rows_per_s"] = seen / (time.perf_counter() - start)
    out["cached_rows_per_s"] = max(out["cached_epoch1_rows_per_s"], out["cached_epoch2_rows_per_s"])
    out["cache_bytes"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    return out


def run_pipeline_bench(spec_path: Path, result_path: Path) -> None:
    """Entry of the data-pipeline process: rows/s from Criteo TSV and Avazu CSV into tensors."""
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    work = Path(spec["work"])
    rows = spec["rows"]
    files = {
        "criteo": write_criteo_tsv(work / f"criteo-{rows}.tsv", rows),
        "avazu": write_avazu_csv(work / f"avazu-{rows}.csv", rows),
    }
    results = []
    for name, path in files.items():
        load = os.getloadavg()
        entry = _pipeline_one(name, path, work / f"cache-{name}", spec["batch_size"])
        entry["loadavg"] = load
        print(f"[pipeline] {entry}", file=sys.stderr, flush=True)
        results.append(entry)
    write_json_atomic(result_path, {"formats": results, "threads": torch.get_num_threads()})
