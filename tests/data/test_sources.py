"""The source registry: names, files, splits (own files or carved by hash), options, re-iteration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from featmux.data.errors import BadRowPolicy, BadRows
from featmux.data.sources import SOURCES, open_source, split_assignment


def rows_of(source, split: str, chunk_rows: int | None = None) -> pl.DataFrame:
    return pl.concat(list(source.split(split, chunk_rows)))


def write_table(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    frame = pl.DataFrame(
        {
            "id": np.arange(n),
            "y": rng.integers(0, 2, n),
            "ad": rng.integers(0, 20, n).astype(str),
            "tags": ["a|b", "", "c"] * (n // 3) + ["d"] * (n % 3),
            "price": rng.normal(size=n).round(3),
        }
    )
    frame.write_csv(path)
    return path


CSV_OPTIONS = {"label": "y", "categorical": ["id", "ad"], "numeric": ["price"], "multivalent": ["tags"]}


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names") as info:
        open_source("kaggle", None)
    for name in SOURCES:
        assert name in str(info.value)


def test_unknown_option_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        open_source("synthetic", rows=10, colour="red")
    with pytest.raises(ValueError, match="unknown option"):
        open_source("csv", write_table(tmp_path / "t.csv", 10), sep=";", **CSV_OPTIONS)


def test_missing_files_name_the_expected_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"frappe\.train\.libfm"):
        open_source("frappe", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train\.txt"):
        open_source("criteo", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source("avazu", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"u\.user"):
        open_source("movielens", tmp_path)


def test_split_assignment_is_a_function_of_seed_and_row():
    rows = np.arange(1, 200_001)
    a = split_assignment(rows, seed=1)
    np.testing.assert_array_equal(a[::7], split_assignment(rows[::7], seed=1))
    assert not np.array_equal(a, split_assignment(rows, seed=2))
    shares = np.bincount(a, minlength=3) / rows.size
    np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.005)
    assert set(split_assignment(rows, 0, (0.5, 0.0, 0.5)).tolist()) == {0, 2}


def test_csv_carved_splits_partition_the_file_whatever_the_chunk_size(tmp_path):
    path = write_table(tmp_path / "t.csv", 1_000)
    source = open_source("csv", path, seed=3, **CSV_OPTIONS)
    assert source.splits == ("train", "valid", "test")
    parts = {name: rows_of(source, name) for name in source.splits}
    ids = [set(parts[name]["id"].to_list()) for name in source.splits]
    assert sum(len(s) for s in ids) == 1_000 and set.union(*ids) == {str(i) for i in range(1_000)}
    assert 700 < len(ids[0]) < 900
    for name in source.splits:  # each split is independent of chunk size, and re-iterable
        assert rows_of(source, name, chunk_rows=7).equals(parts[name])
        assert rows_of(source, name).equals(parts[name])
    again = open_source("csv", path, seed=4, **CSV_OPTIONS)
    assert not rows_of(again, "valid").equals(parts["valid"])


def test_csv_with_own_valid_file_carves_only_test(tmp_path):
    train = write_table(tmp_path / "train.csv", 600)
    write_table(tmp_path / "valid.csv", 90)
    source = open_source("csv", train, valid="valid.csv", **CSV_OPTIONS)
    assert rows_of(source, "valid").height == 90
    assert rows_of(source, "train").height + rows_of(source, "test").height == 600
    assert [p.name for p in source.files] == ["train.csv", "valid.csv"]
    json.dumps(source.options)  # cache keys serialize the options
    assert source.options["valid"].endswith("valid.csv")


def test_csv_without_test_share(tmp_path):
    source = open_source(
        "csv", write_table(tmp_path / "t.csv", 100), fractions=(0.9, 0.1, 0.0), **CSV_OPTIONS
    )
    assert source.splits == ("train", "valid") and not source.has_split("test")
    with pytest.raises(ValueError, match="no split"):
        source.split("test")


def test_bad_rows_of_a_carved_split_are_counted_once(tmp_path):
    path = write_table(tmp_path / "t.csv", 300)
    text = path.read_text().splitlines()
    text[10] = text[10].replace(",", ";", 1)  # one malformed line
    path.write_text("\n".join(text) + "\n")
    bad = BadRows(BadRowPolicy.SKIP)
    source = open_source("csv", path, bad_rows=bad, **CSV_OPTIONS)
    total = sum(rows_of(source, name).height for name in source.splits)
    assert total == 299 and bad.skipped == 1


def test_synthetic_splits_are_disjoint_row_ranges():
    source = open_source("synthetic", rows=2_000, cardinalities=[10, 100], seed=5, chunk_rows=500)
    assert source.files == () and source.options["valid_rows"] == 250
    train, valid = rows_of(source, "train"), rows_of(source, "valid")
    assert (train.height, valid.height, rows_of(source, "test").height) == (2_000, 250, 250)
    assert max(f.height for f in source.split("train")) == 500
    longer = open_source("synthetic", rows=2_250, cardinalities=[10, 100], seed=5)
    assert rows_of(longer, "train").slice(2_000).equals(valid)  # valid = the rows after train
    json.dumps(source.options)


def test_synthetic_takes_no_path(tmp_path):
    with pytest.raises(ValueError, match="no path"):
        open_source("synthetic", tmp_path)


@pytest.mark.real_data
def test_frappe_source(shared_data):
    source = open_source("frappe", shared_data / "frappe")
    assert rows_of(source, "valid").height == 57_722
    assert rows_of(source, "test").height == 28_860
    assert [p.name for p in source.files] == [
        "frappe.train.libfm",
        "frappe.validation.libfm",
        "frappe.test.libfm",
    ]


@pytest.mark.real_data
@pytest.mark.parametrize(("name", "counts"), [("criteo", (7_200, 409, 391)), ("avazu", (8_087, 480, 432))])
def test_kaggle_directories(shared_data, name, counts):
    source = open_source(name, shared_data / name / "wide_resdnn")
    assert tuple(rows_of(source, s).height for s in ("train", "valid", "test")) == counts


@pytest.mark.real_data
def test_single_file_is_split_8_1_1(shared_data):
    source = open_source("criteo", shared_data / "criteo" / "criteo_sample.txt")
    sizes = [rows_of(source, s).height for s in source.splits]
    assert sum(sizes) == 200 and sizes[0] > sizes[1] and sizes[0] > sizes[2]


@pytest.mark.real_data
def test_movielens_source(shared_data, encode_all):
    source = open_source("movielens", shared_data / "movielens-100k" / "grouplens", seed=7)
    parts = [rows_of(source, s) for s in source.splits]
    assert sum(p.height for p in parts) == 72_855
    assert source.options["variant"] == "100k"
    assert rows_of(source, "test", chunk_rows=999).equals(parts[2])
    encode_all([parts[1]], source.schema)
    ml1m = open_source("movielens", shared_data / "movielens-1m", ratings="sample_movielens_rating.dat")
    assert {p.name for p in ml1m.files} == {"sample_movielens_rating.dat", "users.dat", "movies.dat"}


def test_chunks_give_line_numbers_and_see_every_row_through_the_line_filter(tmp_path):
    """`DataSource.chunks`: rows with their file line numbers; an extra line filter sees the split's rows."""
    path = tmp_path / "t.csv"
    path.write_text("click,ad\n1,a\n0,b\n\n1,c\n1,d\n")
    source = open_source("csv", path, label="click", categorical=["ad"], fractions=[1.0, 0.0, 0.0])
    seen: list[int] = []

    def observe(lines: np.ndarray) -> np.ndarray:
        seen.extend(lines.tolist())
        return lines != 5  # drop line 5 ("1,c")

    chunks = list(source.chunks("train", chunk_rows=2, line_filter=observe))
    assert seen == [2, 3, 5, 6]  # the header and the blank line are not rows
    assert [c.lines.tolist() for c in chunks] == [[2, 3], [6]]
    assert pl.concat([c.frame for c in chunks])["ad"].to_list() == ["a", "b", "d"]


def test_a_scored_table_may_lack_its_label(tmp_path):
    from featmux.data.errors import DataError
    from featmux.data.readers.table import table_chunks, table_schema

    path = tmp_path / "t.csv"
    path.write_text("ad,price\na,1.5\nb,2\n")
    schema = table_schema("click", categorical=["ad"], numeric=["price"])
    with pytest.raises(DataError, match="'click': column missing"):
        list(table_chunks(path, schema))
    (chunk,) = table_chunks(path, schema, label_required=False)
    assert chunk.frame["click"].to_list() == [0, 0] and chunk.frame["ad"].to_list() == ["a", "b"]
    pl.DataFrame({"ad": ["x"], "price": [3.0]}).write_parquet(tmp_path / "t.parquet")
    (chunk,) = table_chunks(tmp_path / "t.parquet", schema, label_required=False)
    assert chunk.frame["click"].to_list() == [0]


def test_csv_features_can_share_another_features_rows(tmp_path):
    path = write_table(tmp_path / "t.csv", 30)
    options = {**CSV_OPTIONS, "categorical": ["ad"], "multivalent": ["tags", "id"]}
    source = open_source("csv", path, share_with={"tags": "ad"}, **options)
    assert source.schema.feature("tags").share_with == "ad" and source.schema.feature("id").share_with is None
    assert source.options["share_with"] == {"tags": "ad"}
    assert "share_with" not in open_source("csv", path, **options).options  # old cache keys hold
    with pytest.raises(ValueError, match="unknown feature"):
        open_source("csv", path, share_with={"nope": "ad"}, **options)
    with pytest.raises(ValueError, match="different fingerprints"):  # id read as int, ad as string
        open_source("csv", path, share_with={"id": "ad"}, encodings={"id": "int"}, **options)
