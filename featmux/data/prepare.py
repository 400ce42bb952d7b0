"""From a named data source to encoded, cached splits and a training vocabulary.

The cache key covers the source (name, options, files with size and mtime), its schema and the cache
format, so a changed file or option re-encodes, and everything else is read from disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from featmux.data.cache import CACHE_FORMAT, EncodedDataset
from featmux.data.encoded import encode_frame
from featmux.data.errors import BadRowPolicy, BadRows
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import Schema

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class PreparedData:
    """Encoded splits of one source and the vocabulary of its training split."""

    schema: Schema
    train: EncodedDataset
    valid: EncodedDataset | None
    test: EncodedDataset | None
    vocabulary: Vocabulary
    cache_dir: Path


def default_cache_root() -> Path:
    """$FEATMUX_CACHE, else ~/.cache/featmux."""
    env = os.environ.get("FEATMUX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "featmux"


def cache_key(source: Any, bad_rows: BadRowPolicy = BadRowPolicy.RAISE) -> str:
    """The cache directory name of a source's encoding under a bad-row policy.

    The policy is part of the key: a strict run must never reuse splits encoded while skipping bad rows.

    Args:
        source: an opened `DataSource`.
        bad_rows: stop at bad rows, or skip them.
    """
    files = []
    for path in source.files:
        st = Path(path).stat()
        files.append([str(Path(path).resolve()), st.st_size, st.st_mtime_ns])
    ident = {
        "name": source.name,
        "options": source.options,
        "files": files,
        "schema": source.schema.to_dict(),
        "format": CACHE_FORMAT,
        "bad_rows": bad_rows.value,
    }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{source.name}-{digest}"


def _counted(frames: Iterable[pl.DataFrame], bar: tqdm) -> Iterator[pl.DataFrame]:
    """`frames`, advancing `bar` by each one's rows."""
    for frame in frames:
        bar.update(frame.height)
        yield frame


def prepare(
    dataset: str,
    path: str | Path | None,
    options: dict[str, Any] | None = None,
    cache_root: str | Path | None = None,
    skip_bad_rows: bool = False,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> PreparedData:
    """Open `dataset`, encode each split once into the cache, and fit the vocabulary on train.

    Args:
        dataset: a source name (see `featmux.data.sources`).
        path: where its files are (None for synthetic).
        options: source options (e.g. a CSV table's columns).
        cache_root: cache directory root (default `default_cache_root()`).
        skip_bad_rows: drop malformed rows and report their count instead of stopping at the first.
        log: receives progress messages.
        progress: show a bar (rows encoded, on stderr) while a split is encoded.
    """
    from featmux.data.sources import open_source

    say = log or (lambda _m: None)
    bad = BadRows.skipping(skip_bad_rows)
    source = open_source(dataset, Path(path) if path is not None else None, bad_rows=bad, **(options or {}))
    if bad.skipped:  # side tables read when the source opens (MovieLens users and movies)
        say(f"{dataset} side tables: {bad.summary()}")
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    cache_dir = root / cache_key(source, bad.policy)
    splits: dict[str, EncodedDataset | None] = {}
    for name in SPLITS:
        target = cache_dir / name
        if (target / "meta.json").is_file():
            splits[name] = EncodedDataset(target)
            cached = splits[name].info.get("bad_rows", "no bad rows")
            if cached != "no bad rows":
                say(f"{name} split (cached): {cached}")
            continue
        if not source.has_split(name):
            splits[name] = None
            continue
        say(f"encoding {dataset} {name} split into {target}")
        before = bad.copy()  # the splits share one counter: report each split's own skips, once
        # redrawn on every chunk (a chunk is thousands of rows): a fast split still shows its count
        bar = tqdm(
            desc=f"encoding {name}",
            unit=" rows",
            unit_scale=True,
            disable=not progress,
            leave=False,
            mininterval=0,
        )
        frames = (encode_frame(frame, source.schema) for frame in _counted(source.split(name), bar))
        splits[name] = EncodedDataset.write(
            target,
            source.schema,
            frames,
            info=lambda before=before: {"bad_rows": bad.since(before).summary()},
        )
        bar.close()
        skipped = bad.since(before)
        if skipped.skipped:
            say(f"{name} split: {skipped.summary()}")
    train = splits["train"]
    if train is None or len(train) == 0:
        raise ValueError(f"{dataset}: the training split is empty")
    vocab_path = cache_dir / "vocabulary.npz"
    if vocab_path.is_file():
        with np.load(vocab_path) as arrays:
            vocabulary = Vocabulary.from_arrays(dict(arrays))
    else:
        vocabulary = train.fit_vocabulary()
        tmp = vocab_path.with_suffix(".tmp.npz")
        np.savez(tmp, **vocabulary.to_arrays())
        os.replace(tmp, vocab_path)
    say(
        f"{dataset}: "
        + ", ".join(f"{n} {len(d):,} rows" for n, d in splits.items() if d is not None)
        + f"; cardinalities {vocabulary.cardinalities()}"
    )
    return PreparedData(source.schema, train, splits["valid"], splits["test"], vocabulary, cache_dir)
