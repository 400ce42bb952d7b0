"""Format readers on the real files (row counts from shared/data/README.md) and on malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featmux.data.errors import BadRowPolicy, BadRows, DataError
from featmux.data.readers.avazu import avazu_chunks, avazu_schema, read_avazu
from featmux.data.readers.criteo import criteo_chunks, criteo_schema, read_criteo
from featmux.data.readers.frappe import frappe_schema, read_frappe
from featmux.data.readers.movielens import (
    MovieLensVariant,
    detect_movielens,
    load_items,
    movielens_schema,
    read_movielens,
)
from featmux.data.readers.table import read_table, table_schema
from featmux.data.text import frames, rechunk
from featmux.features import ValueEncoding


def collect(frames_: object) -> pl.DataFrame:
    return pl.concat(list(frames_))  # type: ignore[arg-type]


def assert_schema_columns(frame: pl.DataFrame, schema) -> None:
    expected = [schema.label, *schema.feature_names, *(f.name for f in schema.numeric)]
    assert frame.columns == expected
    assert frame.get_column(schema.label).dtype == pl.Int8
    for feature in schema.categorical:
        dtype = frame.get_column(feature.name).dtype
        inner = pl.Int64 if feature.encoding is ValueEncoding.INT else pl.String
        assert dtype == (pl.List(inner) if feature.multivalent else inner), feature.name
    for feature in schema.numeric:
        assert frame.get_column(feature.name).dtype == pl.Float64


# -- real files ---------------------------------------------------------------------------------------


@pytest.mark.real_data
def test_frappe_validation(shared_data, encode_all):
    frame = collect(read_frappe(shared_data / "frappe" / "frappe.validation.libfm"))
    assert frame.height == 57_722 and int(frame["label"].sum()) == 19_063
    assert_schema_columns(frame, frappe_schema())
    assert (frame["user"].min(), frame["user"].max()) == (0, 954)
    assert frame["city"].min() >= 5149 and frame["city"].max() <= 5381
    assert len(encode_all([frame], frappe_schema())) == 57_722


@pytest.mark.real_data
def test_frappe_test_crlf(shared_data):
    frame = collect(read_frappe(shared_data / "frappe" / "frappe.test.libfm", chunk_rows=10_000))
    assert frame.height == 28_860 and int(frame["label"].sum()) == 9_536


@pytest.mark.real_data
@pytest.mark.parametrize(("name", "rows", "positives"), [("train.csv", 7_200, 1_549), ("dev.csv", 409, 93)])
def test_criteo_wide_resdnn(shared_data, encode_all, name, rows, positives):
    frame = collect(read_criteo(shared_data / "criteo" / "wide_resdnn" / name))
    assert frame.height == rows and int(frame["label"].sum()) == positives
    assert_schema_columns(frame, criteo_schema())
    assert len(encode_all([frame], criteo_schema())) == rows


@pytest.mark.real_data
def test_criteo_csv_sample_with_float_integers(shared_data):
    frame = collect(read_criteo(shared_data / "criteo" / "criteo_sample.txt"))
    assert frame.height == 200 and int(frame["label"].sum()) == 49
    assert frame["I3"][0] == 260.0 and frame["I1"][0] is None  # "260.0" and an empty field


@pytest.mark.real_data
def test_avazu_with_and_without_header(shared_data, encode_all):
    folder = shared_data / "avazu" / "wide_resdnn"
    train = collect(read_avazu(folder / "train.csv"))
    dev = collect(read_avazu(folder / "dev.csv"))
    assert (train.height, dev.height) == (8_087, 480)
    assert_schema_columns(train, avazu_schema())
    assert "id" not in train.columns and "hour" not in train.columns
    # all rows are from 2014-10-21 00:00 (a Tuesday)
    assert train.select("hour_of_day", "weekday", "is_weekend").unique().rows() == [(0, 2, 0)]
    assert 0.15 < train["click"].mean() < 0.19
    assert len(encode_all([train, dev], avazu_schema())) == 8_567


@pytest.mark.real_data
def test_movielens_100k(shared_data, encode_all):
    folder = shared_data / "movielens-100k" / "grouplens"
    files = detect_movielens(folder)
    assert files.variant is MovieLensVariant.ML_100K
    frame = collect(read_movielens(folder))
    # 100,000 ratings, 27,145 of them 3s; 4s and 5s are 34,174 + 21,201
    assert frame.height == 72_855 and int(frame["label"].sum()) == 55_375
    assert_schema_columns(frame, movielens_schema())
    toy_story = frame.filter(pl.col("item_id") == 1)["genres"][0].to_list()
    assert toy_story == ["Animation", "Children's", "Comedy"]
    assert len(encode_all([frame], movielens_schema())) == 72_855


@pytest.mark.real_data
def test_movielens_1m_explicit_ratings_and_latin1_titles(shared_data):
    folder = shared_data / "movielens-1m"
    with pytest.raises(FileNotFoundError, match=r"ratings\.dat"):
        detect_movielens(folder)
    frame = collect(read_movielens(folder, ratings="sample_movielens_rating.dat"))
    # ratings 1-5: 5,598 / 10,686 / 26,233 / 34,913 / 22,570
    assert frame.height == 100_000 - 26_233 and int(frame["label"].sum()) == 34_913 + 22_570
    items = load_items(detect_movielens(folder, "sample_movielens_rating.dat"))
    assert items.height == 3_883
    toy_story = items.filter(pl.col("item_id") == 1)["genres"][0].to_list()
    assert toy_story == ["Animation", "Children's", "Comedy"]


@pytest.mark.real_data
def test_movielens_ratings_file_path_finds_side_tables_above(shared_data):
    ratings = shared_data / "movielens-1m" / "cs100_half" / "ratings.dat"
    files = detect_movielens(ratings)
    assert files.variant is MovieLensVariant.ML_1M and files.users.name == "users.dat"


@pytest.mark.real_data
def test_table_parquet_and_csv(shared_data, encode_all):
    schema = table_schema("click", categorical=["101", "205"], numeric=["D508"])
    frame = collect(read_table(shared_data / "ali-ccp" / "ali_ccp_train_sample.csv", schema))
    assert frame.height == 100
    assert_schema_columns(frame, schema)
    encode_all([frame], schema)


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("reader", "path", "schema"),
    [
        (criteo_chunks, "criteo/wide_resdnn/dev.csv", criteo_schema()),
        (avazu_chunks, "avazu/wide_resdnn/dev.csv", avazu_schema()),
    ],
)
def test_chunking_invariance(shared_data, encode_all, assert_same_encoding, reader, path, schema):
    reference = encode_all(frames(reader(shared_data / path)), schema)
    small = frames(rechunk(reader(shared_data / path, chunk_rows=7, block_bytes=4096), 7))
    sizes = []

    def sized():
        for frame in small:
            sizes.append(frame.height)
            yield frame

    assert_same_encoding(encode_all(sized(), schema), reference)
    assert max(sizes) == 7 and all(s == 7 for s in sizes[:-1])


@pytest.mark.real_data
def test_chunking_invariance_movielens(shared_data, encode_all, assert_same_encoding):
    folder = shared_data / "movielens-100k" / "grouplens"
    schema = movielens_schema()
    reference = encode_all(read_movielens(folder), schema)
    assert_same_encoding(encode_all(read_movielens(folder, chunk_rows=7_001), schema), reference)


# -- malformed input ----------------------------------------------------------------------------------

CRITEO_ROW = "\t".join(["1", *[str(i) for i in range(13)], *["68fd1e64"] * 26])


def criteo_file(tmp_path: Path, rows: list[str], name: str = "train.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


def replace_field(row: str, index: int, value: str) -> str:
    fields = row.split("\t")
    fields[index] = value
    return "\t".join(fields)


@pytest.mark.parametrize(
    ("bad_row", "field", "message"),
    [
        (replace_field(CRITEO_ROW, 0, "2"), "label", "label must be 0 or 1"),
        (replace_field(CRITEO_ROW, 0, "yes"), "label", "label must be 0 or 1"),
        (replace_field(CRITEO_ROW, 0, ""), "label", "label must be 0 or 1"),
        (replace_field(CRITEO_ROW, 5, "12x"), "I5", "not a finite number"),
        (replace_field(CRITEO_ROW, 16, "zz"), "C3", "not a hexadecimal id"),
        ("\t".join(CRITEO_ROW.split("\t")[:39]), None, "expected 40 fields, found 39"),
    ],
)
def test_criteo_bad_rows(tmp_path, bad_row, field, message):
    path = criteo_file(tmp_path, [CRITEO_ROW, CRITEO_ROW, bad_row, CRITEO_ROW])
    with pytest.raises(DataError) as info:
        collect(read_criteo(path))
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 3, field)
    assert info.value.message == message
    bad = BadRows(BadRowPolicy.SKIP)
    assert collect(read_criteo(path, bad_rows=bad)).height == 3
    assert bad.skipped == 1


def test_criteo_truncated_last_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CRITEO_ROW + "\n" + CRITEO_ROW[:50])  # cut off mid-row, no final newline
    with pytest.raises(DataError) as info:
        collect(read_criteo(path))
    assert info.value.line == 2 and info.value.message.startswith("expected 40 fields")


def test_criteo_empty_and_invalid_utf8(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        collect(read_criteo(empty))
    broken = tmp_path / "broken.txt"
    second = replace_field(CRITEO_ROW, 20, "ab\xff").encode("latin-1")  # \xff alone is not UTF-8
    broken.write_bytes((CRITEO_ROW + "\n").encode() + second)
    with pytest.raises(DataError) as info:
        collect(read_criteo(broken))
    assert (info.value.line, info.value.message) == (2, "not valid UTF-8")


def test_criteo_skip_counts_many_reasons(tmp_path):
    rows = [CRITEO_ROW] * 5 + [replace_field(CRITEO_ROW, 0, "2")] * 3
    rows += [replace_field(CRITEO_ROW, 1, "x")] * 2
    path = criteo_file(tmp_path, rows)
    bad = BadRows(BadRowPolicy.SKIP)
    assert collect(read_criteo(path, bad_rows=bad, chunk_rows=4)).height == 5
    assert bad.counts == {"label: label must be 0 or 1": 3, "I1: not a finite number": 2}


AVAZU_HEADER = "id,click,hour," + ",".join(
    ["C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category"]
    + ["device_id", "device_ip", "device_model", "device_type", "device_conn_type"]
    + [f"C{i}" for i in range(14, 22)]
)
AVAZU_ROW = (
    "1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,"
    "a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79"
)


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        (",0,14102100,", ",3,14102100,", "click", "label must be 0 or 1"),
        (",0,14102100,", ",0,14102199,", "hour", "hour must be YYMMDDHH"),
        (",0,14102100,", ",0,141021,", "hour", "hour must be YYMMDDHH"),
        (",1005,0,", ",1005,top,", "banner_pos", "not an integer"),
    ],
)
def test_avazu_bad_rows(tmp_path, old, new, field, message):
    path = tmp_path / "train.csv"
    path.write_text(f"{AVAZU_HEADER}\n{AVAZU_ROW}\n{AVAZU_ROW.replace(old, new)}\n")
    with pytest.raises(DataError) as info:
        collect(read_avazu(path))
    assert (info.value.line, info.value.field, info.value.message) == (3, field, message)


def test_frappe_bad_rows(tmp_path):
    good = "1 266:1 1244:1 5042:1 5049:1 5054:1 5055:1 5058:1 5062:1 5074:1 5149:1"
    path = tmp_path / "frappe.libfm"
    rows = [
        good,
        "-1 1:1 2:1 3:1 4:1 5:1 6:1 7:1 8:1 9:1 10:1",
        f"2 {good[2:]}",
        good.replace("5149:1", "5149"),
    ]
    path.write_bytes("".join(f"{row}\r\n" for row in rows).encode())
    bad = BadRows(BadRowPolicy.SKIP)
    frame = collect(read_frappe(path, bad_rows=bad))
    assert frame["label"].to_list() == [1, 0]
    assert frame["item"].to_list() == [1244, 2]
    assert bad.counts == {"label: label must be 0 or 1": 1, "city: expected index:1": 1}


def test_movielens_bad_rows(tmp_path):
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (tmp_path / "movies.dat").write_bytes("1::Café (1995)::Comedy|Drama\n2::X::Drama\n".encode("latin-1"))
    ratings = ["1::1::5::1", "1::2::3::2", "2::1::1::3", "3::1::5::4", "2::9::4::5", "1::2::6::6"]
    (tmp_path / "ratings.dat").write_text("\n".join(ratings) + "\n")
    with pytest.raises(DataError) as info:
        collect(read_movielens(tmp_path))
    assert (info.value.line, info.value.field) == (4, "user_id")
    bad = BadRows(BadRowPolicy.SKIP)
    frame = collect(read_movielens(tmp_path, bad_rows=bad))
    assert frame.select("label", "user_id", "item_id").rows() == [(1, 1, 1), (0, 2, 1)]
    assert frame["genres"].to_list() == [["Comedy", "Drama"], ["Comedy", "Drama"]]
    assert bad.counts == {
        "user_id: user not in the users file": 1,
        "item_id: movie not in the movies file": 1,
        "rating: rating must be an integer from 1 to 5": 1,
    }


def test_movielens_missing_side_table(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1::5::1\n")
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n")
    with pytest.raises(FileNotFoundError, match=r"movies\.dat"):
        detect_movielens(tmp_path)


def test_table_csv_multivalent_quotes_and_errors(tmp_path, encode_all):
    schema = table_schema(
        "y", categorical=["ad"], numeric=["price"], multivalent=["tags"], encodings={"ad": "int"}
    )
    path = tmp_path / "t.csv"
    path.write_text('y,ad,tags,price,extra\n1,7,"a|b",1.5,x\n0,8,,,y\n1,9,c,abc,z\n2,10,d,2,w\n')
    bad = BadRows(BadRowPolicy.SKIP)
    frame = collect(read_table(path, schema, bad_rows=bad))
    assert_schema_columns(frame, schema)
    assert frame.rows() == [(1, 7, ["a", "b"], 1.5), (0, 8, [], None)]
    assert bad.counts == {"price: not a finite number": 1, "y: label must be 0 or 1": 1}
    encoded = encode_all([frame], schema)
    assert encoded.bags[0].offsets.tolist() == [0, 2, 2]
    with pytest.raises(DataError) as info:
        collect(read_table(path, schema))
    assert (info.value.line, info.value.field) == (4, "price")


def test_table_missing_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("y,ad\n1,2\n")
    with pytest.raises(DataError) as info:
        read_table(path, table_schema("y", ["ad", "site"]))
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 1, "site")


def test_table_parquet(tmp_path, encode_all):
    table = pa.table(
        {
            "label": pa.array([0, 1, 1, 2, 0], pa.int64()),
            "ad": pa.array(["a", "b", "a", "c", None]).dictionary_encode(),
            "tags": pa.array([["x"], [], None, ["y", "z"], ["x", "y"]]),
            "price": pa.array([1.0, None, 3.0, 4.0, float("nan")]),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=2)
    schema = table_schema("label", ["ad"], ["price"], ["tags"])
    with pytest.raises(DataError) as info:
        collect(read_table(path, schema))
    assert info.value.path == f"{path}[row 3]" and info.value.field == "label"
    bad = BadRows(BadRowPolicy.SKIP)
    frame = collect(read_table(path, schema, chunk_rows=2, bad_rows=bad))
    assert frame["ad"].to_list() == ["a", "b", "a", None]
    assert frame["tags"].to_list() == [["x"], [], [], ["x", "y"]]
    assert frame["price"].to_list() == [1.0, None, 3.0, None]
    assert bad.skipped == 1
    encode_all([frame], schema)
    with pytest.raises(DataError, match="missing"):
        read_table(path, table_schema("label", ["site"]))


def test_int_columns_accept_integral_floats_only(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"label": [1, 0], "ad": [3.0, 2.5]}), path)
    bad = BadRows(BadRowPolicy.SKIP)
    frame = collect(read_table(path, table_schema("label", ["ad"], encodings={"ad": "int"}), bad_rows=bad))
    assert frame["ad"].to_list() == [3] and bad.counts == {"ad: not an integer": 1}
    assert np.asarray(frame["ad"]).dtype == np.int64


@pytest.mark.real_data
def test_frappe_rebuilt_train_lf(shared_data):
    frame = collect(read_frappe(shared_data / "frappe" / "frappe.train.libfm"))
    assert frame.height == 202_027 and int(frame["label"].sum()) == 67_604


@pytest.mark.real_data
def test_chunking_invariance_frappe_slice(shared_data, tmp_path, encode_all, assert_same_encoding):
    head = (shared_data / "frappe" / "frappe.validation.libfm").read_bytes().split(b"\r\n")[:300]
    path = tmp_path / "slice.libfm"
    path.write_bytes(b"\r\n".join(head))  # CRLF, no final line break
    reference = encode_all(read_frappe(path), frappe_schema())
    assert len(reference) == 300
    assert_same_encoding(encode_all(read_frappe(path, chunk_rows=7), frappe_schema()), reference)


def test_parquet_dtype_drift_fingerprints_the_same(tmp_path, encode_all):
    """Int64 in one file, Float64 (pandas NaNs) in another: "123" either way, never "123.0"."""
    schema = table_schema("y", categorical=["ad"], multivalent=["tags"])
    ints = tmp_path / "ints.parquet"
    floats = tmp_path / "floats.parquet"
    pl.DataFrame({"y": [1, 0, 1], "ad": [123, 7, None], "tags": [[1, 2], [3], []]}).write_parquet(ints)
    pl.DataFrame(
        {"y": [1, 0, 1], "ad": [123.0, 7.0, float("nan")], "tags": [[1.0, 2.0], [3.0], [float("nan")]]}
    ).write_parquet(floats)
    a, b = collect(read_table(ints, schema)), collect(read_table(floats, schema))
    assert a["ad"].to_list() == b["ad"].to_list() == ["123", "7", None]
    assert a["tags"].to_list() == b["tags"].to_list() == [["1", "2"], ["3"], []]
    ea, eb = encode_all([a], schema), encode_all([b], schema)
    np.testing.assert_array_equal(ea.ids, eb.ids)
    np.testing.assert_array_equal(ea.bags[0].values, eb.bags[0].values)
    # a fraction stays a fraction
    half = tmp_path / "half.parquet"
    pl.DataFrame({"y": [1], "ad": [1.5], "tags": [[2.5]]}).write_parquet(half)
    assert collect(read_table(half, schema)).row(0) == (1, "1.5", ["2.5"])


def test_uint64_ids_above_2_63_univalent_and_multivalent_alike(tmp_path, encode_all):
    schema = table_schema(
        "y", categorical=["ad"], multivalent=["tags"], encodings={"ad": "int", "tags": "int"}
    )
    big = (1 << 63) + 5
    path = tmp_path / "u64.parquet"
    table = pa.table(
        {
            "y": pa.array([1, 0], pa.int8()),
            "ad": pa.array([big, 3], pa.uint64()),
            "tags": pa.array([[big, 3], []], pa.list_(pa.uint64())),
        }
    )
    pq.write_table(table, path)
    bad = BadRows(BadRowPolicy.SKIP)
    frame = collect(read_table(path, schema, bad_rows=bad))
    assert bad.skipped == 0
    assert frame["ad"].to_list() == [big - (1 << 64), 3]  # the same 64 bits, as int64
    assert frame["tags"].to_list() == [[big - (1 << 64), 3], []]
    encoded = encode_all([frame], schema)
    assert encoded.bags[0].values.tolist() == encoded.ids[:, 0].tolist()
