"""The dataset registry: a name and a path -> a `DataSource` with a schema and train/valid/test splits.

Names (`SOURCES`):
- `frappe`: a directory with frappe.{train,validation,test}.libfm.
- `movielens`: a MovieLens 100K/1M directory or ratings file (see `detect_movielens`); option `ratings`;
  `history=N` adds each rating's last N earlier ratings of its user (`featmux.data.sequences`, for DIN);
  their movies read `item_id`'s embedding rows unless `share_embedding=false`; `behaviour=liked` keeps
  only the training split's ratings 4-5 in it (DIN's clicks; default `rated`: every rating);
  `split_by=user` carves valid/test by user instead of by rating (the DIN paper's protocol); then
  `liked` holds the user's own earlier ratings 4-5, which are all in the row's split.
- `criteo`, `avazu`: a directory with train/dev/test files (e.g. shared/data/*/wide_resdnn), or one file.
- `csv`: a CSV or Parquet table (the train file); options describe the columns (`label`, `categorical`,
  `numeric`, `multivalent`, ...; `share_with`: {feature: the feature whose embedding rows it reads})
  and optional `valid` / `test` files.
- `synthetic`: no path; options `seed`, `rows` (default 200,000; valid and test default to rows / 8),
  `valid_rows`, `test_rows` and any `SyntheticConfig` field.

Every source takes `drop_features`: categorical features left out of its schema (e.g. `[user_id]`, so
that held-out users are known by their history alone); they are not encoded and the cache key names them.

A split without its own file is carved from the training file: each row goes to train/valid/test by a
hash of (seed, line number) against `fractions` (default 8:1:1). The assignment is deterministic, needs
no pass over the data, and does not depend on chunk sizes; the rows of the other splits are skipped
before parsing. Every `split(name)` call starts a new pass over the files.

Example:
    >>> source = open_source("criteo", Path("shared/data/criteo/wide_resdnn"))
    >>> for frame in source.split("train"):
    ...     chunk = encode_frame(frame, source.schema)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from featmux.data.errors import BadRows
from featmux.data.readers.avazu import avazu_chunks, avazu_schema
from featmux.data.readers.criteo import criteo_chunks, criteo_schema
from featmux.data.readers.frappe import frappe_chunks, frappe_schema
from featmux.data.readers.movielens import (
    detect_movielens,
    load_items,
    load_users,
    movielens_chunks,
    movielens_schema,
)
from featmux.data.readers.table import csv_format, table_chunks, table_schema
from featmux.data.sequences import (
    Behaviour,
    behaviour_mask,
    build_history,
    history_schema,
    rating_events,
    with_history,
)
from featmux.data.synthetic import SyntheticConfig, iter_synthetic, mix64, synthetic_schema
from featmux.data.text import DEFAULT_CHUNK_ROWS, LineFilter, TextChunk, frames, rechunk
from featmux.features import Schema

SPLITS = ("train", "valid", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)

# (chunk_rows, line_filter) -> the rows of one pass over a split, with their line numbers (row indices)
SplitReader = Callable[[int, LineFilter | None], Iterator[TextChunk]]
ChunkReader = Callable[..., Iterator[TextChunk]]  # (path, *, chunk_rows, bad_rows, line_filter)
# what an opener returns: schema, files, options, readers and where each split's rows come from
_Opened = tuple[Schema, tuple[Path, ...], dict[str, Any], dict[str, SplitReader], dict[str, str]]


@dataclass(frozen=True)
class DataSource:
    """A dataset: its schema and a reader per split.

    Args:
        name: the registry name (`SOURCES`).
        schema: the columns of every frame.
        files: every file read (for cache keys); empty for synthetic data.
        options: the resolved options, defaults included (JSON-able; for cache keys).
        readers: split name -> function(chunk_rows, line_filter) starting a new pass over that split.
        chunk_rows: default rows per frame.
        origins: split name -> where its rows come from, e.g. "80% of ratings.dat (carved by split seed
            0)" (shown by `featmux data inspect`).

    Example:
        >>> source = open_source("frappe", Path("shared/data/frappe"))
        >>> source.splits, [p.name for p in source.files]
        (('train', 'valid', 'test'), ['frappe.train.libfm', 'frappe.validation.libfm', 'frappe.test.libfm'])
        >>> n = sum(frame.height for frame in source.split("valid"))  # 57,722
    """

    name: str
    schema: Schema
    files: tuple[Path, ...]
    options: dict[str, Any]
    readers: Mapping[str, SplitReader] = field(repr=False)
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    origins: Mapping[str, str] = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this source has, in `SPLITS` order."""
        return tuple(s for s in SPLITS if s in self.readers)

    def has_split(self, name: str) -> bool:
        """Whether the source has split `name`."""
        return name in self.readers

    def split(self, name: str, chunk_rows: int | None = None) -> Iterator[pl.DataFrame]:
        """A new pass over one split.

        Args:
            name: "train", "valid" or "test".
            chunk_rows: rows per frame (default `self.chunk_rows`); the last frame may be shorter.

        Returns:
            An iterator of frames with exactly the schema's columns.

        Raises:
            ValueError: `name` is not a split of this source.
        """
        return frames(self.chunks(name, chunk_rows))

    def chunks(
        self, name: str, chunk_rows: int | None = None, line_filter: LineFilter | None = None
    ) -> Iterator[TextChunk]:
        """A new pass over one split, each row with its line number (row index for Parquet and synthetic).

        Args:
            name: "train", "valid" or "test".
            chunk_rows: rows per chunk (default `self.chunk_rows`); the last chunk may be shorter.
            line_filter: called with the line numbers of the split's rows before they are parsed (text
                files, and Parquet/synthetic row indices); rows where it returns False are not read.

        Returns:
            An iterator of `TextChunk`s whose frames have exactly the schema's columns.

        Raises:
            ValueError: `name` is not a split of this source.
        """
        if name not in self.readers:
            raise ValueError(f"{self.name} has no split {name!r}; it has {list(self.splits)}")
        rows = self.chunk_rows if chunk_rows is None else chunk_rows
        if rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {rows}")
        return self.readers[name](rows, line_filter)


def split_assignment(
    rows: np.ndarray, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> np.ndarray:
    """The split of each row: 0 train, 1 valid, 2 test, from a hash of (seed, row number).

    Args:
        rows: int64 [n] row identifiers (line numbers, row indices).
        seed: the split's seed.
        fractions: (train, valid, test) shares, summing to 1.

    Returns:
        int8 [n]; a row's split depends only on (seed, row, fractions).
    """
    key = mix64(np.asarray([seed], dtype=np.uint64) ^ np.uint64(0x5A1E5EED))
    bits = mix64(np.asarray(rows, dtype=np.int64).view(np.uint64) ^ key)
    uniform = (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    bounds = np.cumsum(np.asarray(fractions, dtype=np.float64))[:2]
    return np.searchsorted(bounds, uniform, side="right").astype(np.int8)


def _fractions(value: Any) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in value)
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be 3 non-negative shares (train > 0) summing to 1, got {value}")
    return fractions  # type: ignore[return-value]


# line numbers -> int8 split of each line (0 train, 1 valid, 2 test)
Assignment = Callable[[np.ndarray], np.ndarray]


def _bucket_filter(assign: Assignment, buckets: frozenset[int]) -> LineFilter:
    wanted = np.asarray(sorted(buckets), dtype=np.int8)

    def keep(lines: np.ndarray) -> np.ndarray:
        return np.isin(assign(lines), wanted)

    return keep


def _user_assignment(events: pl.DataFrame, seed: int, fractions: Sequence[float]) -> Assignment:
    """Each line's split from a hash of (seed, its user id): a user's ratings all go to one split.

    Lines that are not parsable ratings go to train, whose reader reports them with line and field.
    """
    keys = events.get_column("key").to_numpy()
    by_line = np.zeros(int(keys.max()) + 1 if keys.size else 0, dtype=np.int8)
    by_line[keys] = split_assignment(events.get_column("user_id").to_numpy(), seed, fractions)

    def assign(lines: np.ndarray) -> np.ndarray:
        lines = np.asarray(lines, dtype=np.int64)
        inside = lines < by_line.size
        out = np.zeros(lines.shape, dtype=np.int8)
        out[inside] = by_line[lines[inside]]
        return out

    return assign


def _both(first: LineFilter | None, second: LineFilter | None) -> LineFilter | None:
    """Lines kept by `first`, then passed to `second` (which sees only those)."""
    if first is None or second is None:
        return first or second

    def keep(lines: np.ndarray) -> np.ndarray:
        mask = np.asarray(first(lines), dtype=bool)
        mask[mask] = np.asarray(second(lines[mask]), dtype=bool)
        return mask

    return keep


def _file_readers(
    read: ChunkReader,
    files: Mapping[str, Path | None],
    bad_rows: BadRows,
    seed: int,
    fractions: Sequence[float],
    assign: Assignment | None = None,
    carved_by: str = "rows",
) -> tuple[dict[str, SplitReader], dict[str, str]]:
    """One reader per split: its own file, or its share of the train file (see the module docstring);
    and where each split's rows come from, in words. `assign` replaces the per-line hash (e.g. by user),
    `carved_by` names what it hashes."""
    if assign is None:

        def assign(lines: np.ndarray) -> np.ndarray:
            return split_assignment(lines, seed, fractions)

    train = files["train"]
    assert train is not None
    plan: dict[str, tuple[Path, frozenset[int] | None]] = {}
    carved = [i for i, s in enumerate(SPLITS) if i > 0 and files.get(s) is None and fractions[i] > 0]
    for i, name in enumerate(SPLITS):
        path = files.get(name)
        if name == "train":
            kept = frozenset(range(3)) - frozenset(carved)
            plan[name] = (train, None if len(kept) == 3 else kept)
        elif path is not None:
            plan[name] = (path, None)
        elif i in carved:
            plan[name] = (train, frozenset({i}))

    def reader(path: Path, buckets: frozenset[int] | None) -> SplitReader:
        def run(chunk_rows: int, extra: LineFilter | None) -> Iterator[TextChunk]:
            line_filter = None if buckets is None else _bucket_filter(assign, buckets)
            line_filter = _both(line_filter, extra)
            chunks = read(path, chunk_rows=chunk_rows, bad_rows=bad_rows, line_filter=line_filter)
            return rechunk(chunks, chunk_rows)

        return run

    readers = {name: reader(path, buckets) for name, (path, buckets) in plan.items()}
    origins = {
        name: path.name
        if buckets is None
        else f"{sum(fractions[b] for b in buckets):.0%} of {path.name} "
        f"({carved_by} carved by split seed {seed})"
        for name, (path, buckets) in plan.items()
    }
    return readers, origins


def _options(source: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{source}: unknown option(s) {unknown}; valid options are {sorted(defaults)}")
    return {**defaults, **given}


def _json(value: Any) -> Any:
    """Options as JSON-able values (for cache keys)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value


def _resolve(folder: Path, value: str | Path | None, what: str) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute() and not path.exists():
        path = folder / path
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    return path


def _find(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _need_path(source: str, path: Path | None) -> Path:
    if path is None:
        raise ValueError(f"{source} needs a path")
    if not path.exists():
        raise FileNotFoundError(f"{source}: {path} does not exist")
    return path


_SPLIT_DEFAULTS: dict[str, Any] = {
    "train": None,
    "valid": None,
    "test": None,
    "seed": 0,
    "fractions": DEFAULT_FRACTIONS,
}

_KAGGLE_NAMES = {
    "train": ("train.txt", "train.csv", "train.tsv", "train"),
    "valid": (
        *(f"{stem}.{ext}" for stem in ("valid", "dev", "validation", "val") for ext in ("txt", "csv", "tsv")),
    ),
    "test": ("test.txt", "test.csv", "test.tsv"),
}
_FRAPPE_NAMES = {
    "train": ("frappe.train.libfm",),
    "valid": ("frappe.validation.libfm",),
    "test": ("frappe.test.libfm",),
}


def _split_files(
    source: str, path: Path, options: Mapping[str, Any], names: Mapping[str, Sequence[str]]
) -> dict[str, Path | None]:
    """The file of each split: explicit options first, then the standard names in a directory."""
    if path.is_file():
        folder, found = path.parent, {"train": path, "valid": None, "test": None}
    else:
        folder = path
        found = {split: _find(path, names[split]) for split in SPLITS}
    for split in SPLITS:
        explicit = _resolve(folder, options[split], f"{source} {split}")
        if explicit is not None:
            found[split] = explicit
    if found["train"] is None:
        raise FileNotFoundError(
            f"{source}: expected a training file in {folder}: {' or '.join(names['train'])}"
        )
    return found


def _open_files(
    source: str,
    path: Path | None,
    given: Mapping[str, Any],
    bad_rows: BadRows,
    schema: Schema,
    read: ChunkReader,
    names: Mapping[str, Sequence[str]],
) -> _Opened:
    options = _options(source, given, _SPLIT_DEFAULTS)
    options["fractions"] = _fractions(options["fractions"])
    files = _split_files(source, _need_path(source, path), options, names)
    readers, origins = _file_readers(read, files, bad_rows, int(options["seed"]), options["fractions"])
    record = {**options, **{s: files[s] for s in SPLITS}}
    return schema, tuple(p for p in files.values() if p is not None), record, readers, origins


def _open_frappe(path: Path | None, given: Mapping[str, Any], bad_rows: BadRows) -> _Opened:
    return _open_files("frappe", path, given, bad_rows, frappe_schema(), frappe_chunks, _FRAPPE_NAMES)


def _open_criteo(path: Path | None, given: Mapping[str, Any], bad_rows: BadRows) -> _Opened:
    return _open_files("criteo", path, given, bad_rows, criteo_schema(), criteo_chunks, _KAGGLE_NAMES)


def _open_avazu(path: Path | None, given: Mapping[str, Any], bad_rows: BadRows) -> _Opened:
    return _open_files("avazu", path, given, bad_rows, avazu_schema(), avazu_chunks, _KAGGLE_NAMES)


# how the movielens source carves valid/test from the ratings: by rating (line) or by user (the DIN
# paper's MovieLens protocol: test users never appear in training)
_MOVIELENS_SPLIT_BY = ("rating", "user")


def _open_movielens(path: Path | None, given: Mapping[str, Any], bad_rows: BadRows) -> _Opened:
    defaults = {
        "ratings": None,
        "seed": 0,
        "fractions": DEFAULT_FRACTIONS,
        "history": 0,
        "share_embedding": True,
        "behaviour": Behaviour.RATED.value,
        "split_by": "rating",
    }
    options = _options("movielens", given, defaults)
    if options["split_by"] not in _MOVIELENS_SPLIT_BY:
        raise ValueError(
            f"movielens: option split_by must be one of {', '.join(_MOVIELENS_SPLIT_BY)}, "
            f"got {options['split_by']!r}"
        )
    by_user = options["split_by"] == "user"
    options["fractions"] = _fractions(options["fractions"])
    ml = detect_movielens(_need_path("movielens", path), options["ratings"])
    # the side tables are small: load (and check) them once, not on every pass
    users, items = load_users(ml, bad_rows), load_items(ml, bad_rows)
    schema = movielens_schema()
    history_length = int(options["history"])
    if history_length < 0:
        raise ValueError(
            f"movielens: option history (the longest history kept) must be >= 0, got {history_length}"
        )
    share = options["share_embedding"]
    if not isinstance(share, bool):
        raise ValueError(f"movielens: option share_embedding must be true or false, got {share!r}")
    try:
        behaviour = Behaviour(options["behaviour"])
    except ValueError:
        choices = ", ".join(b.value for b in Behaviour)
        raise ValueError(
            f"movielens: option behaviour must be one of {choices}, got {options['behaviour']!r}"
        ) from None
    if history_length:
        schema = history_schema(schema, share)
    else:
        for needs in ("share_embedding", "behaviour"):
            if needs in given:
                raise ValueError(f"movielens: option {needs} needs a history (option history=N)")
    history: list[pl.DataFrame] = []  # built on the first pass over the ratings, then kept
    seed, fractions = int(options["seed"]), options["fractions"]

    @cache  # the ratings' events: read on the first pass that needs them, then kept
    def rating_events_once() -> pl.DataFrame:
        return rating_events(ml)

    @cache
    def user_split() -> Assignment:
        return _user_assignment(rating_events_once(), seed, fractions)

    def assign_by_user(lines: np.ndarray) -> np.ndarray:
        return user_split()(lines)

    def read(ratings: Path, **kwargs: Any) -> Iterator[TextChunk]:
        chunks = movielens_chunks(ml, users=users, items=items, **kwargs)
        if not history_length:
            return chunks
        if not history:
            found = rating_events_once()
            keys = found.get_column("key").to_numpy()
            # which labels a history may read: by rating, the training split's only; by user, all of
            # them (a history holds its own user's ratings, all in the row's split, strictly earlier)
            readable = np.ones(keys.size, bool) if by_user else split_assignment(keys, seed, fractions) == 0
            mask = behaviour_mask(found, behaviour, readable)
            history.append(build_history(found, items, history_length, mask))
        return with_history(chunks, history[0], [schema.label, *schema.feature_names])

    split_files: dict[str, Path | None] = {"train": ml.ratings, "valid": None, "test": None}
    readers, origins = _file_readers(
        read,
        split_files,
        bad_rows,
        seed,
        fractions,
        assign_by_user if by_user else None,
        "users" if by_user else "rows",
    )
    record = {**options, "ratings": ml.ratings, "variant": ml.variant.value}
    # options left at their defaults stay out of the record, so earlier caches keep their keys
    if not by_user:
        del record["split_by"]
    if not history_length:
        record = {k: v for k, v in record.items() if k not in ("history", "share_embedding", "behaviour")}
    elif behaviour is Behaviour.RATED:
        del record["behaviour"]
    return schema, ml.files, record, readers, origins


_CSV_DEFAULTS: dict[str, Any] = {
    **_SPLIT_DEFAULTS,
    "label": None,
    "categorical": (),
    "numeric": (),
    "multivalent": (),
    "multivalent_separator": "|",
    "encodings": None,
    "transforms": None,
    "separator": ",",
    "header": True,
    "names": None,
    "encoding": "utf-8",
    "share_with": None,
}


def _open_csv(path: Path | None, given: Mapping[str, Any], bad_rows: BadRows) -> _Opened:
    options = _options("csv", given, _CSV_DEFAULTS)
    options["fractions"] = _fractions(options["fractions"])
    if not options["label"]:
        raise ValueError("csv: option 'label' (the 0/1 label column) is required")
    for key in ("categorical", "numeric", "multivalent"):
        if isinstance(options[key], str):  # a single column given as a string, not a list of characters
            options[key] = (options[key],)
        options[key] = tuple(options[key])
    schema = table_schema(
        options["label"],
        options["categorical"],
        options["numeric"],
        options["multivalent"],
        separator=options["multivalent_separator"],
        encodings=options["encodings"],
        transforms=options["transforms"],
    )
    shares = options["share_with"] or {}
    if not isinstance(shares, Mapping):
        raise ValueError(
            f"csv: option share_with must map features to the feature whose rows they read, got {shares!r}"
        )
    schema = schema.with_shares(shares)
    fmt = csv_format(options["separator"], options["header"], options["names"], options["encoding"])

    def read(table: Path, **kwargs: Any) -> Iterator[TextChunk]:
        return table_chunks(table, schema, fmt=fmt, **kwargs)

    train = _need_path("csv", path)
    if not train.is_file():
        raise ValueError(f"csv: {train} is not a file (give the training table)")
    files = {"train": train}
    files |= {s: _resolve(train.parent, options[s], f"csv {s}") for s in ("valid", "test")}
    readers, origins = _file_readers(read, files, bad_rows, int(options["seed"]), options["fractions"])
    record = {**options, **files}
    if not shares:  # without sharing the record (and so the cache key) is what it was before
        del record["share_with"]
    return schema, tuple(p for p in files.values() if p is not None), record, readers, origins


_SYNTHETIC_FIELDS = tuple(f.name for f in fields(SyntheticConfig))


def _open_synthetic(path: Path | None, given: Mapping[str, Any], bad_rows: BadRows) -> _Opened:
    if path is not None:
        raise ValueError(f"synthetic data has no path (got {path})")
    defaults = {"rows": 200_000, "valid_rows": None, "test_rows": None}
    defaults |= {name: getattr(SyntheticConfig(), name) for name in _SYNTHETIC_FIELDS}
    options = _options("synthetic", given, defaults)
    config = SyntheticConfig(**{name: options[name] for name in _SYNTHETIC_FIELDS})
    rows = int(options["rows"])
    sizes = {
        "train": rows,
        "valid": rows // 8 if options["valid_rows"] is None else int(options["valid_rows"]),
        "test": rows // 8 if options["test_rows"] is None else int(options["test_rows"]),
    }
    if min(sizes.values()) < 0 or rows < 1:
        raise ValueError(f"synthetic: rows must be >= 1 and valid/test rows >= 0, got {sizes}")
    options |= {"valid_rows": sizes["valid"], "test_rows": sizes["test"]}

    def reader(start: int, count: int) -> SplitReader:
        def run(chunk_rows: int, line_filter: LineFilter | None) -> Iterator[TextChunk]:
            first = start
            for frame in iter_synthetic(config, count, chunk_rows, start_row=start):
                rows = np.arange(first - start, first - start + frame.height, dtype=np.int64)
                first += frame.height
                if line_filter is not None:
                    keep = np.asarray(line_filter(rows), dtype=bool)
                    frame, rows = frame.filter(pl.Series(keep)), rows[keep]
                yield TextChunk(frame, rows)

        return run

    # disjoint row ranges of one stream: train, then valid, then test
    readers = {
        "train": reader(0, sizes["train"]),
        "valid": reader(sizes["train"], sizes["valid"]),
        "test": reader(sizes["train"] + sizes["valid"], sizes["test"]),
    }
    readers = {name: r for name, r in readers.items() if sizes[name] > 0}
    origins = {name: f"{sizes[name]:,} synthetic rows" for name in readers}
    return synthetic_schema(config), (), options, readers, origins


_OPENERS = {
    "avazu": _open_avazu,
    "criteo": _open_criteo,
    "csv": _open_csv,
    "frappe": _open_frappe,
    "movielens": _open_movielens,
    "synthetic": _open_synthetic,
}
SOURCES = tuple(sorted(_OPENERS))


def open_source(
    name: str,
    path: str | Path | None = None,
    *,
    bad_rows: BadRows | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    **options: Any,
) -> DataSource:
    """Open a dataset by name.

    Args:
        name: one of `SOURCES`.
        path: its file or directory (None for synthetic).
        bad_rows: where malformed rows go, shared by all splits (default: raise a `DataError`).
        chunk_rows: default rows per frame of `DataSource.split`.
        **options: source options (see the module docstring); unknown ones are an error.
            File sources take `train`/`valid`/`test` (file names overriding the standard ones), `seed`
            and `fractions` (for splits carved from the train file).

    Returns:
        The source; nothing is read until a split is iterated (side tables aside).

    Raises:
        ValueError: unknown name or option.
        FileNotFoundError: naming the expected file that is missing.
    """
    opener = _OPENERS.get(name)
    if opener is None:
        raise ValueError(f"unknown data source {name!r}; valid names are {list(SOURCES)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    options = dict(options)
    dropped = options.pop("drop_features", None)
    schema, files, record, readers, origins = opener(
        Path(path) if path is not None else None, options, bad_rows
    )
    if dropped is not None:
        schema = _without_features(name, schema, dropped)
        record = {**record, "drop_features": sorted(dropped)}
    return DataSource(name, schema, files, _json(record), readers, chunk_rows, origins)


def _without_features(source: str, schema: Schema, dropped: Any) -> Schema:
    """The schema without the categorical features named in `dropped` (option `drop_features`)."""
    if not isinstance(dropped, list | tuple) or not dropped or not all(isinstance(n, str) for n in dropped):
        raise ValueError(
            f"{source}: option drop_features must be a non-empty list of feature names, got {dropped!r}"
        )
    unknown = sorted(set(dropped) - set(schema.feature_names))
    if unknown:
        raise ValueError(
            f"{source}: option drop_features names {unknown}, not categorical features of the source "
            f"{list(schema.feature_names)}"
        )
    return replace(schema, categorical=tuple(f for f in schema.categorical if f.name not in dropped))
