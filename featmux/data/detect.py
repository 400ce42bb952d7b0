"""Which dataset a path holds, and the columns of a CSV or Parquet table, inferred for a first look.

`detect_source` tells the registry name (`featmux.data.sources.SOURCES`) from the files' names and
first lines: Frappe's `frappe.*.libfm`, MovieLens side tables, a Criteo or Avazu train file (by its
header or field count), else a CSV / Parquet table. `infer_table_options` reads a sample of a table
with polars and proposes its `csv` source options: the label (a column named like one, else the first
column holding only 0/1), integer and text columns as categorical (integers with the INT encoding),
float columns as numeric, and list columns (Parquet) as multivalent. A text column whose cells hold
values joined by one consistent separator ("Comedy|Drama", "3;17") is multivalent too (see
`bag_separator`); the separator goes into `multivalent_separator`.

Example:
    >>> detect_source(Path("shared/data/frappe"))
    'frappe'
    >>> infer_table_options(Path("clicks.csv"))
    {'label': 'click', 'categorical': ['user', 'ad'], 'numeric': ['price'], ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from featmux.data.readers.movielens import detect_movielens
from featmux.data.readers.table import is_parquet
from featmux.data.text import peek_line

SAMPLE_ROWS = 10_000
LABEL_NAMES = ("label", "click", "clicked", "is_click", "target", "y")
_CRITEO_FIELDS = 40
_TRAIN_NAMES = ("train.txt", "train.csv", "train.tsv", "train")
_MOVIELENS_SIDE_TABLES = (("u.user", "u.item"), ("users.dat", "movies.dat"))
BAG_SEPARATORS = ("|", ";", ",")
"""Separators tried inside text cells, in order of preference (the field separator is never one)."""
MIN_BAG_SHARE = 0.05
"""A separator must join values in at least this share of a column's non-null cells."""


def _kaggle_kind(path: Path) -> str | None:
    """criteo or avazu from a train file's first line, else None."""
    first = peek_line(path).strip()
    header = [c.strip().lower() for c in first.split(",")]
    if header[:2] == ["label", "i1"] or len(first.split("\t")) == _CRITEO_FIELDS:
        return "criteo"
    if "click" in header and "hour" in header:
        return "avazu"
    return None


def _ratings_like(path: Path) -> bool:
    """A MovieLens ratings line: user::movie::rating::time, or 4 tab-separated fields."""
    first = peek_line(path)
    return first.count("::") == 3 or first.count("\t") == 3


def detect_source(path: str | Path) -> str:
    """The registry name of the dataset at `path`.

    Args:
        path: a dataset directory or file.

    Returns:
        "frappe", "movielens", "criteo", "avazu" or "csv".

    Raises:
        FileNotFoundError: no such path.
        ValueError: a directory whose layout is none of these (give the dataset name).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir() and any(path.glob("frappe.*.libfm")):
        return "frappe"
    if path.is_dir():
        if any(all((path / n).is_file() for n in names) for names in _MOVIELENS_SIDE_TABLES):
            return "movielens"  # its ratings file may still be missing: opening it says which to give
    elif not is_parquet(path) and _ratings_like(path):
        try:
            detect_movielens(path)  # a ratings file beside (or below) the side tables
            return "movielens"
        except FileNotFoundError:
            pass
    if path.is_file():
        return "csv" if is_parquet(path) else (_kaggle_kind(path) or "csv")
    train = next((path / n for n in _TRAIN_NAMES if (path / n).is_file()), None)
    kind = _kaggle_kind(train) if train is not None else None
    if kind is None:
        raise ValueError(
            f"cannot tell which dataset {path} holds: give --dataset (frappe, movielens, criteo, avazu, csv "
            "with the table file)"
        )
    return kind


def _sample(path: Path, separator: str) -> pl.DataFrame:
    if is_parquet(path):
        return pl.read_parquet(path, n_rows=SAMPLE_ROWS)
    return pl.read_csv(path, separator=separator, n_rows=SAMPLE_ROWS, infer_schema_length=SAMPLE_ROWS)


def _is_binary(column: pl.Series) -> bool:
    if not (column.dtype.is_numeric() or column.dtype == pl.Boolean):
        return False
    values = column.drop_nulls().cast(pl.Float64)
    return values.len() > 0 and bool(values.is_in([0.0, 1.0]).all())


def bag_separator(column: pl.Series, field_separator: str | None = ",") -> str | None:
    """The separator of a multivalent text column, or None when the column does not look like one.

    A column is multivalent with separator s when s is the only one of `BAG_SEPARATORS` that occurs in
    its cells, it occurs in at least `MIN_BAG_SHARE` of them, and splitting at s leaves no more distinct
    values than there are distinct cells (bag items repeat across rows; free text split at its
    punctuation does not).

    Args:
        column: a sample of the column.
        field_separator: the file's field separator (a CSV's; None for Parquet), never a bag separator.
    """
    if column.dtype != pl.String:
        return None
    cells = column.drop_nulls()
    if cells.len() == 0:
        return None
    shares = {
        sep: float(cells.str.contains(sep, literal=True).mean() or 0.0)
        for sep in BAG_SEPARATORS
        if sep != field_separator
    }
    present = [sep for sep, share in shares.items() if share > 0]
    if len(present) != 1 or shares[present[0]] < MIN_BAG_SHARE:
        return None
    sep = present[0]
    if sep == "," and cells.str.contains(r"^\s*-?\d+,\d+\s*$").all():
        return None  # decimal commas ("1,5" in a ";"-separated file) are numbers, not bags
    items = _items(cells, sep)
    return sep if 0 < items.n_unique() <= cells.n_unique() else None


def _items(column: pl.Series, sep: str) -> pl.Series:
    """The items of a text column's cells split at `sep`, as the reader reads them (stripped, empty ones
    dropped: "a||b" holds a and b)."""
    items = column.drop_nulls().str.split(sep).explode().str.strip_chars()
    return items.filter(items != "")


def _integer_items(column: pl.Series, sep: str) -> bool:
    """Whether every item of a multivalent text column is an integer (then it takes the INT encoding)."""
    items = _items(column, sep)
    return items.len() > 0 and items.str.to_integer(strict=False).null_count() == 0


def infer_table_options(path: str | Path, separator: str = ",", label: str | None = None) -> dict[str, Any]:
    """`csv` source options for a table, from the dtypes and values of its first `SAMPLE_ROWS` rows.

    Args:
        path: a CSV (with a header line) or Parquet file.
        separator: the CSV field separator.
        label: the label column, if known (else inferred).

    Returns:
        label, categorical, numeric, multivalent and encodings (INT for integer columns and for text
        bags of integers); with multivalent text columns also their `multivalent_separator`. Text
        columns with another separator than the one most of them use stay categorical.

    Raises:
        ValueError: no column can be the label, or the named one is absent (naming the columns).
    """
    path = Path(path)
    sample = _sample(path, separator)
    columns = sample.columns
    if label is None:
        # a column named like a label is the label even with bad values (reading it reports them)
        named = [c for c in columns if c.lower() in LABEL_NAMES]
        binary = [c for c in columns if _is_binary(sample.get_column(c))]
        label = (named or binary or [None])[0]
    if label is None or label not in columns:
        raise ValueError(
            f"{path}: cannot infer the 0/1 label column among {columns}: give --dataset-option label=NAME"
        )
    categorical, numeric, multivalent, encodings = [], [], [], {}
    field = None if is_parquet(path) else separator
    bags = {n: bag_separator(sample.get_column(n), field) for n in columns if n != label}
    found = [sep for sep in bags.values() if sep is not None]
    # one separator for all multivalent columns (the `multivalent_separator` source option): the most used
    bag_sep = max(BAG_SEPARATORS, key=found.count) if found else None
    for name, dtype in sample.schema.items():
        if name == label:
            continue
        if bag_sep is not None and bags[name] == bag_sep:
            multivalent.append(name)
            if _integer_items(sample.get_column(name), bag_sep):
                encodings[name] = "int"
        elif isinstance(dtype, pl.List):
            multivalent.append(name)
            if dtype.inner.is_integer():
                encodings[name] = "int"
        elif dtype.is_float():
            numeric.append(name)
        else:
            categorical.append(name)
            if dtype.is_integer():
                encodings[name] = "int"
    inferred: dict[str, Any] = {
        "label": label,
        "categorical": categorical,
        "numeric": numeric,
        "multivalent": multivalent,
        "encodings": encodings,
    }
    if bag_sep is not None:
        inferred["multivalent_separator"] = bag_sep
    return inferred
