"""The streaming text reader: layouts, line numbers, validation and bad-row policies."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featmux.data.errors import BadRowPolicy, BadRows, DataError
from featmux.data.text import (
    Check,
    TextChunk,
    TextFormat,
    iter_text,
    read_header,
    rechunk,
    reject_rows,
)


def read_all(path: Path, fmt: TextFormat, **kwargs) -> TextChunk:
    chunks = list(iter_text(path, fmt, **kwargs))
    if not chunks:
        return TextChunk(pl.DataFrame(), np.zeros(0, dtype=np.int64))
    return TextChunk(pl.concat([c.frame for c in chunks]), np.concatenate([c.lines for c in chunks]))


def write(tmp_path: Path, data: bytes, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_header_crlf_blank_lines_and_missing_final_newline(tmp_path):
    path = write(tmp_path, b"a,b,c\r\n1,x,\r\n\r\n2,,z\r\n\n3,y,w")
    out = read_all(path, TextFormat(",", header=True))
    assert out.frame.columns == ["a", "b", "c"]
    assert out.frame.rows() == [("1", "x", None), ("2", None, "z"), ("3", "y", "w")]
    assert out.lines.tolist() == [2, 4, 6]  # 1-based, header and blank lines counted


def test_names_and_field_count_default(tmp_path):
    path = write(tmp_path, b"1\t2\n3\t4\n")
    assert read_header(path, TextFormat("\t")) == ("column_1", "column_2")
    out = read_all(path, TextFormat("\t", names=("u", "v")))
    assert out.frame.rows() == [("1", "2"), ("3", "4")]


def test_multi_character_separator_and_latin1(tmp_path):
    text = "7::Misérables, Les (1995)::Drama|Musical\n8::Café: Au Lait::Comedy\n"
    path = write(tmp_path, text.encode("latin-1"))
    out = read_all(path, TextFormat("::", encoding="latin-1", names=("id", "title", "genres")))
    assert out.frame.get_column("title").to_list() == ["Misérables, Les (1995)", "Café: Au Lait"]
    assert out.frame.get_column("genres").to_list() == ["Drama|Musical", "Comedy"]


def test_utf8_bom_is_dropped(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfa,b\n1,2\n")
    assert read_header(path, TextFormat(",", header=True)) == ("a", "b")


def test_wrong_field_count_names_file_and_line(tmp_path):
    path = write(tmp_path, b"1\t2\t3\n4\t5\n6\t7\t8\n")
    with pytest.raises(DataError) as info:
        read_all(path, TextFormat("\t", num_fields=3))
    error = info.value
    assert error.path == str(path) and error.line == 2
    assert error.message == "expected 3 fields, found 2"
    assert f"{path}:2:" in str(error)


def test_invalid_utf8_names_line(tmp_path):
    path = write(tmp_path, b"a,b\nok,1\nbad\xff\xfe,2\nfine,3\n")
    with pytest.raises(DataError) as info:
        read_all(path, TextFormat(",", header=True))
    assert info.value.line == 3 and info.value.message == "not valid UTF-8"


def test_skip_policy_drops_and_counts_by_reason(tmp_path):
    path = write(tmp_path, b"1,2\n3\n4,5,6\n\xff,1\n7,8\n9\n")
    bad = BadRows(BadRowPolicy.SKIP)
    out = read_all(path, TextFormat(",", num_fields=2), bad_rows=bad)
    assert out.frame.rows() == [("1", "2"), ("7", "8")]
    assert out.lines.tolist() == [1, 5]
    assert bad.skipped == 4
    assert bad.counts == {
        "expected 2 fields, found 1": 2,
        "expected 2 fields, found 3": 1,
        "not valid UTF-8": 1,
    }
    assert f"{path}:2" in bad.summary()


def test_raise_reports_the_earliest_bad_line_whatever_the_check(tmp_path):
    path = write(tmp_path, b"1,2\n1,2,3\n\xff,2\n")
    with pytest.raises(DataError) as info:
        read_all(path, TextFormat(",", num_fields=2))
    assert info.value.line == 2


def test_empty_file_is_an_error(tmp_path):
    path = write(tmp_path, b"")
    with pytest.raises(DataError, match="empty"):
        read_all(path, TextFormat(",", num_fields=2))


def test_header_only_file_has_no_rows(tmp_path):
    path = write(tmp_path, b"a,b\n")
    assert read_all(path, TextFormat(",", header=True)).frame.height == 0


def test_quoted_csv(tmp_path):
    path = write(tmp_path, b'a,b\n"x, y",1\n"say ""hi""",2\n')
    out = read_all(path, TextFormat(",", header=True, quoting=True))
    assert out.frame.rows() == [("x, y", "1"), ('say "hi"', "2")]


def test_quoted_csv_errors(tmp_path):
    path = write(tmp_path, b'a,b\n"x, y",1\n"open,2\n"x", y,3\n5,6\n')
    bad = BadRows(BadRowPolicy.SKIP)
    out = read_all(path, TextFormat(",", header=True, quoting=True), bad_rows=bad)
    assert out.frame.rows() == [("x, y", "1"), ("5", "6")]
    assert bad.counts == {"unbalanced quotes": 1, "expected 2 fields, found 3": 1}
    with pytest.raises(DataError) as info:
        read_all(path, TextFormat(",", header=True, quoting=True))
    assert info.value.line == 3


def test_quotes_are_plain_characters_without_quoting(tmp_path):
    path = write(tmp_path, b'"a\t1\nb"\t2\n')
    out = read_all(path, TextFormat("\t", names=("x", "y")))
    assert out.frame.get_column("x").to_list() == ['"a', 'b"']


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 20])
def test_block_size_does_not_change_rows_or_lines(tmp_path, block_bytes):
    rng = np.random.default_rng(0)
    lines = [f"{i}\t{'x' * int(rng.integers(0, 30))}\t{i * 2}" for i in range(300)]
    lines.insert(100, "")
    path = write(tmp_path, ("\n".join(lines)).encode())
    reference = read_all(path, TextFormat("\t", num_fields=3))
    out = read_all(path, TextFormat("\t", num_fields=3), block_bytes=block_bytes, chunk_rows=13)
    assert out.frame.equals(reference.frame)
    np.testing.assert_array_equal(out.lines, reference.lines)
    assert reference.frame.height == 300 and reference.lines[-1] == 301


def test_chunks_are_bounded(tmp_path):
    path = write(tmp_path, b"".join(b"%d,%d\n" % (i, i) for i in range(100)))
    sizes = [c.frame.height for c in iter_text(path, TextFormat(",", num_fields=2), chunk_rows=7)]
    assert max(sizes) <= 7 and sum(sizes) == 100


def test_line_filter_skips_lines_before_checks(tmp_path):
    path = write(tmp_path, b"1,2\nbad\n3,4\n5,6\n")
    out = read_all(path, TextFormat(",", num_fields=2), line_filter=lambda lines: lines != 2)
    assert out.lines.tolist() == [1, 3, 4]


def test_rechunk_gives_exact_sizes():
    chunks = [
        TextChunk(pl.DataFrame({"x": list(range(start, stop))}), np.arange(start, stop))
        for start, stop in [(0, 3), (3, 3), (3, 20), (20, 21)]
    ]
    out = list(rechunk(chunks, 5))
    assert [c.frame.height for c in out] == [5, 5, 5, 5, 1]
    assert pl.concat([c.frame for c in out]).get_column("x").to_list() == list(range(21))
    assert np.concatenate([c.lines for c in out]).tolist() == list(range(21))


def test_reject_rows_reports_each_row_once():
    chunk = TextChunk(pl.DataFrame({"x": [1, 2, 3, 4]}), np.array([10, 11, 12, 13]))
    checks = [
        Check("x", "first", np.array([False, True, True, False])),
        Check("x", "second", np.array([False, True, False, True])),
    ]
    bad = BadRows(BadRowPolicy.SKIP)
    out = reject_rows(chunk, checks, "f.csv", bad)
    assert out.frame.get_column("x").to_list() == [1]
    assert bad.counts == {"x: first": 2, "x: second": 1}
    with pytest.raises(DataError) as info:
        reject_rows(chunk, checks[::-1], "f.csv", BadRows())
    assert (info.value.line, info.value.message) == (11, "second")


def test_format_validation():
    with pytest.raises(ValueError):
        TextFormat("")
    with pytest.raises(ValueError):
        TextFormat(",", encoding="cp1252")
    with pytest.raises(ValueError):
        TextFormat("::", quoting=True)
    with pytest.raises(ValueError):
        TextFormat(",", names=("a", "a"))


_CELL = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.lists(_CELL, min_size=3, max_size=3), min_size=1, max_size=30),
    crlf=st.booleans(),
    block_bytes=st.sampled_from([1, 16, 1 << 20]),
)
def test_quoted_csv_round_trip(tmp_path_factory, rows, crlf, block_bytes):
    """Whatever Python's csv module writes (one line per row), the reader reads back."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n" if crlf else "\n", quoting=csv.QUOTE_MINIMAL).writerows(
        [["a", "b", "c"], *rows]
    )
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    out = read_all(path, TextFormat(",", header=True, quoting=True), block_bytes=block_bytes, chunk_rows=4)
    # empty cells read as null; a row of three empty cells is a line of two commas, not blank
    expected = [tuple(cell if cell else None for cell in row) for row in rows]
    assert out.frame.rows() == expected
    assert out.lines.tolist() == list(range(2, len(rows) + 2))
