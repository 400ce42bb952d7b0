"""Fuzzing every reader with malformed files: a clear error or a counted skip, never a crash or mis-parse.

Each format gets a generator of files whose lines are valid rows, rows with bad values (garbage, huge
numbers, wrong types), truncated lines, lines with fields dropped or repeated, invalid UTF-8, blank and
whitespace lines, CRLF, and a missing final newline; read in small blocks so lines straddle block
boundaries. An independent per-line oracle (plain Python) says what each line must become. Then:

- under `BadRowPolicy.SKIP` the reader yields exactly the oracle's rows, values and line numbers, in
  order, and counts exactly the oracle's bad lines as skipped (no silent mis-parse, no lost row);
- under `BadRowPolicy.RAISE` it raises a `DataError` naming one of the bad lines (or reads everything);
- the rows it yields encode (`encode_frame`) without error;
- nothing else is ever raised.

A second family writes arbitrary bytes (and truncated real files, and empty files) to every reader: only
`DataError` (file, line, field) may come out. Example budgets are fixed and the runs derandomized, so
this is part of the normal pytest run (a few seconds per reader).
"""

from __future__ import annotations

import datetime
import functools
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featmux.data.encoded import encode_frame
from featmux.data.errors import BadRowPolicy, BadRows, DataError
from featmux.data.readers.avazu import COLUMNS as AVAZU_COLUMNS
from featmux.data.readers.avazu import INT_FIELDS as AVAZU_INTS
from featmux.data.readers.avazu import avazu_chunks, avazu_schema
from featmux.data.readers.criteo import criteo_chunks, criteo_schema
from featmux.data.readers.frappe import frappe_chunks, frappe_schema
from featmux.data.readers.movielens import (
    MovieLensFiles,
    MovieLensVariant,
    movielens_chunks,
    movielens_schema,
)
from featmux.data.readers.table import table_chunks, table_schema
from featmux.data.text import TextChunk

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: part of CI, never flaky
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BAD = "bad"
BLANK = "blank"
INT64 = 1 << 63

# -- value tokens: valid ones, and garbage that must be rejected (or read as missing) -------------------

GARBAGE = [
    "abc", "1.5", "1e3", "0x1F", "--1", "1 2", " 7", "7 ", "١٢", "9" * 25, "-" + "9" * 20, "1e400", "-1e400",
    "inf", "-inf", "Infinity", "nan", "NaN", "\x00", "\x1f", "\x1e\x1d\x1c\x01\x02\x03", "ü", "\U0001f600",
    "\t", "'", '"', '"quoted"', "\\", "null", "None", "N/A", "+", "-", ".", "e5", "1e", "١",
]  # fmt: skip
INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80"]

ints = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.integers(-INT64, INT64 - 1).map(str),
    st.sampled_from(["0", "-0", "+5", "007", ""]),
)
floats = st.one_of(
    st.integers(-1000, 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.sampled_from(["1.0", ".5", "5.", "-2.5e3", "1e-400", "nan", ""]),
)
hexes = st.one_of(
    st.integers(0, (1 << 32) - 1).map(lambda v: f"{v:08x}"),
    st.integers(0, (1 << 64) - 1).map(lambda v: f"{v:X}"),
    st.just(""),
)
strings = st.one_of(
    st.text(st.characters(blacklist_characters=",\n\r", blacklist_categories=["Cs"]), max_size=12),
    st.sampled_from(["a1b2c3d4", "1fbe01fe", "", "ecad2386"]),
)
labels = st.sampled_from(["0", "1", "0", "1", "1.0", "0.0", "2", "-1", "", "x", "0.5", "1e0", " 1"])


def maybe_garbage(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(valid, valid, valid, st.sampled_from(GARBAGE))


@st.composite
def mutated(draw: st.DrawFn, fields: list[str], sep: str) -> bytes:
    """A line from its fields, sometimes damaged: truncated, a field dropped or repeated, bad bytes."""
    kind = draw(st.sampled_from(["ok"] * 6 + ["truncate", "drop", "repeat", "bytes", "blank", "spaces"]))
    if kind == "drop" and len(fields) > 1:
        del fields[draw(st.integers(0, len(fields) - 1))]
    elif kind == "repeat":
        i = draw(st.integers(0, len(fields) - 1))
        fields.insert(i, fields[i])
    line = sep.join(fields).encode("utf-8", "surrogatepass")
    if kind == "truncate" and line:
        line = line[: draw(st.integers(0, len(line) - 1))]
    elif kind == "bytes":
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from(INVALID_UTF8)) + line[at:]
    elif kind == "blank":
        line = b""
    elif kind == "spaces":
        line = b"  "
    return line


@st.composite
def text_file(
    draw: st.DrawFn, line: st.SearchStrategy[bytes], header: bytes | None
) -> tuple[bytes, list[bytes], int]:
    """(file bytes, its lines as the reader sees them, number of header lines)."""
    lines = draw(st.lists(line, max_size=20))
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    with_header = header is not None and draw(st.booleans())
    all_lines = ([header] if with_header else []) + lines
    data = eol.join(all_lines) + (eol if all_lines and draw(st.booleans()) else b"")
    # what the reader sees: CRLF -> LF everywhere (a line's own trailing \r goes with a following \n)
    seen = data.replace(b"\r\n", b"\n").split(b"\n")
    if seen and seen[-1] == b"" and data.endswith(b"\n"):
        seen = seen[:-1]
    elif seen and seen[-1].endswith(b"\r"):  # a last line without newline gets one, then CRLF -> LF
        seen[-1] = seen[-1][:-1]
    return data, seen, int(with_header)


# -- oracles: what one line must become ------------------------------------------------------------------


def decode(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def as_int(text: str | None) -> Any:
    if text is None:
        return None
    if re.fullmatch(r"[+-]?[0-9]+", text) and -INT64 <= int(text) < INT64:
        return int(text)
    return BAD


_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def as_float(text: str | None) -> Any:
    if text is None:
        return None
    if text in ("nan", "NaN", "-nan", "+nan"):
        return None  # NaN means missing
    if not _FLOAT.fullmatch(text):
        return BAD
    value = float(text)
    return BAD if value in (float("inf"), float("-inf")) else value


def as_label(text: str | None) -> Any:
    value = as_float(text)
    return int(value) if value in (0.0, 1.0) and value is not None else BAD


def as_hex(text: str | None) -> Any:
    if text is None:
        return None
    return text if re.fullmatch(r"[0-9a-fA-F]{1,16}", text) else BAD


def field(text: str) -> str | None:
    return None if text == "" else text  # empty fields are missing


def split_line(line: bytes, sep: str, count: int) -> list[str | None] | str:
    """The `count` fields of a UTF-8 line (`field` each), or its outcome: BLANK, or BAD (invalid UTF-8, or
    another number of fields)."""
    text = decode(line)
    if text is None:
        return BAD
    if text == "":
        return BLANK
    raw = [field(v) for v in text.split(sep)]
    return raw if len(raw) == count else BAD


def avazu_oracle(line: bytes) -> Any:
    raw = split_line(line, ",", 24)
    if isinstance(raw, str):
        return raw
    values = dict(zip(AVAZU_COLUMNS, raw, strict=True))
    click = as_label(values["click"])
    hour = (values["hour"] or "").strip()
    try:
        if not re.fullmatch(r"[0-9]{8}", hour):
            raise ValueError
        date = datetime.datetime.strptime(hour[:6], "%y%m%d").date()
        hod = int(hour[6:])
        if hod >= 24:
            raise ValueError
    except ValueError:
        return BAD
    row: list[Any] = [click, hod, date.isoweekday(), int(date.isoweekday() >= 6)]
    for name in AVAZU_COLUMNS[3:]:
        row.append(as_int(values[name]) if name in AVAZU_INTS else values[name])
    return BAD if BAD in row else tuple(row)


def avazu_line() -> st.SearchStrategy[bytes]:
    hours = st.one_of(
        st.builds(
            lambda d, h: (
                (datetime.date(2014, 10, 21) + datetime.timedelta(days=d)).strftime("%y%m%d") + f"{h:02d}"
            ),
            st.integers(-3000, 3000),
            st.integers(0, 23),
        ),
        st.sampled_from(["14102199", "14023000", "1410210", "141021000", "1410210a", " 14102100"]),
    )
    parts: list[st.SearchStrategy[str]] = [
        st.integers(0, 10**19).map(str),
        labels,
        hours,
    ]
    parts += [maybe_garbage(ints) if c in AVAZU_INTS else strings for c in AVAZU_COLUMNS[3:]]
    return st.tuples(*parts).flatmap(lambda fs: mutated(list(fs), ","))


def criteo_oracle(line: bytes) -> Any:
    raw = split_line(line, "\t", 40)
    if isinstance(raw, str):
        return raw
    row = [as_label(raw[0])] + [as_hex(v) for v in raw[14:]] + [as_float(v) for v in raw[1:14]]
    return BAD if BAD in row else tuple(row)


def criteo_line() -> st.SearchStrategy[bytes]:
    parts = [labels] + [maybe_garbage(floats)] * 13 + [maybe_garbage(hexes)] * 26
    return st.tuples(*parts).flatmap(lambda fs: mutated(list(fs), "\t"))


FRAPPE_LABELS = {"1": 1, "-1": 0, "+1": 1, "0": 0}


def frappe_oracle(line: bytes) -> Any:
    raw = split_line(line, " ", 11)
    if isinstance(raw, str):
        return raw
    row: list[Any] = [FRAPPE_LABELS.get(raw[0] or "", BAD)]
    for pair in raw[1:]:
        if pair is None:
            row.append(None)
            continue
        match = re.fullmatch(r"([0-9]+):1(?:\.0*)?", pair)
        row.append(as_int(match.group(1)) if match else BAD)
    return BAD if BAD in row else tuple(row)


def frappe_line() -> st.SearchStrategy[bytes]:
    pair = st.one_of(
        st.integers(0, 6000).map(lambda i: f"{i}:1"),
        st.sampled_from(["5:1.0", "5:1.00", "5:2", "5", ":1", "x:1", "9" * 25 + ":1", "-5:1", "5:1.5"]),
    )
    label = st.sampled_from(["1", "-1", "+1", "0", "2", "", "yes"])
    return st.tuples(label, *[pair] * 10).flatmap(lambda fs: mutated(list(fs), " "))


USERS = {1: ("F", 1, "10", "48067"), 2: ("M", 56, "16", "70072"), 3: ("M", 25, "15", "55117")}
MOVIES = {1: ["Animation", "Children's", "Comedy"], 2: ["Adventure"], 5: []}


def movielens_oracle(line: bytes) -> Any:
    text = line.decode("latin-1")
    if text == "":
        return BLANK
    raw = [field(v) for v in text.split("::")]
    if len(raw) != 4:
        return BAD
    user, item, rating, stamp = (as_int(v) for v in raw)
    if BAD in (user, item, stamp) or rating not in (1, 2, 3, 4, 5):
        return BAD
    if user not in USERS or item not in MOVIES:
        return BAD
    if rating == 3:
        return BLANK  # dropped by the CTR labelling, not an error
    gender, age, occupation, zipcode = USERS[user]
    return (int(rating >= 4), user, item, gender, age, occupation, zipcode, MOVIES[item])


def movielens_line() -> st.SearchStrategy[bytes]:
    ids = st.one_of(st.integers(0, 6).map(str), st.sampled_from(["", "x", "9" * 30, "1.0"]))
    rating = st.one_of(st.integers(0, 6).map(str), st.sampled_from(["", "4.5", "five"]))
    stamp = maybe_garbage(st.integers(0, 2**40).map(str))
    return st.tuples(ids, ids, rating, stamp).flatmap(lambda fs: mutated(list(fs), "::"))


# -- the property -------------------------------------------------------------------------------------------


Read = Callable[[Path, BadRows], Iterator[TextChunk]]  # (file, bad rows) -> the reader's chunks


def reading(chunks: Callable[..., Iterator[TextChunk]], chunk_rows: int, block: int) -> Read:
    """`chunks(path, ...)` (a reader's `*_chunks`) as a `Read`: `chunk_rows` rows, `block` bytes at a time."""

    def read(path: Path, bad: BadRows) -> Iterator[TextChunk]:
        return chunks(path, chunk_rows=chunk_rows, bad_rows=bad, block_bytes=block)

    return read


def rows(chunk: TextChunk) -> Iterator[tuple[int, tuple]]:
    yield from zip(chunk.lines.tolist(), chunk.frame.rows(), strict=True)


def check(
    read: Read,
    schema: Any,
    data: bytes,
    seen: list[bytes],
    header_lines: int,
    oracle: Callable[[bytes], Any],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.txt"
        path.write_bytes(data)
        expected, bad_lines = [], []
        for number, line in enumerate(seen[header_lines:], start=header_lines + 1):
            outcome = oracle(line)
            if outcome == BAD:
                bad_lines.append(number)
            elif outcome != BLANK:
                expected.append((number, outcome))
        if not data:
            with pytest.raises(DataError, match="file is empty"):
                list(read(path, BadRows(BadRowPolicy.SKIP)))
            return
        skip = BadRows(BadRowPolicy.SKIP)
        chunks = list(read(path, skip))
        got = [row for chunk in chunks for row in rows(chunk)]
        assert got == expected
        assert skip.skipped == len(bad_lines), skip.summary()
        for chunk in chunks:
            encode_frame(chunk.frame, schema)
        if bad_lines:
            with pytest.raises(DataError) as error:
                list(read(path, BadRows()))
            assert error.value.line in bad_lines and str(path) in str(error.value)
        else:
            assert [row for chunk in read(path, BadRows()) for row in rows(chunk)] == expected


block_sizes = st.sampled_from([64, 257, 4096, 1 << 20])


@FUZZ
@given(text_file(avazu_line(), ",".join(AVAZU_COLUMNS).encode()), block_sizes)
def test_avazu_reader(file, block):
    check(reading(avazu_chunks, 7, block), avazu_schema(), *file, avazu_oracle)


@FUZZ
@given(text_file(criteo_line(), None), block_sizes)
def test_criteo_reader(file, block):
    check(reading(criteo_chunks, 7, block), criteo_schema(), *file, criteo_oracle)


@FUZZ
@given(text_file(frappe_line(), None), block_sizes)
def test_frappe_reader(file, block):
    check(reading(frappe_chunks, 7, block), frappe_schema(), *file, frappe_oracle)


def movielens_side_tables(folder: Path) -> tuple[Path, Path]:
    users = folder / "users.dat"
    users.write_text("".join(f"{u}::{g}::{a}::{o}::{z}\n" for u, (g, a, o, z) in USERS.items()))
    movies = folder / "movies.dat"
    movies.write_text("".join(f"{m}::Title {m} (1995)::{'|'.join(g)}\n" for m, g in MOVIES.items()))
    return users, movies


@FUZZ
@given(text_file(movielens_line(), None), block_sizes)
def test_movielens_reader(file, block):
    data, seen, header = file
    with tempfile.TemporaryDirectory() as side:
        users, movies = movielens_side_tables(Path(side))

        def read(path: Path, bad: BadRows) -> Iterator[TextChunk]:
            files = MovieLensFiles(MovieLensVariant.ML_1M, path, users, movies)
            return movielens_chunks(files, chunk_rows=7, bad_rows=bad, block_bytes=block)

        if data and b"::" not in data.split(b"\n")[0] and b"\t" not in data.split(b"\n")[0]:
            # the layout is read from the first line: without a separator there, the file is refused
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "ratings.dat"
                path.write_bytes(data)
                with pytest.raises(DataError, match="not a MovieLens ratings file"):
                    list(read(path, BadRows(BadRowPolicy.SKIP)))
            return
        if data and b"\t" in data.split(b"\n")[0] and b"::" not in data.split(b"\n")[0]:
            return  # read as the 100K tab layout: another oracle
        check(read, movielens_schema(), data, seen, header, movielens_oracle)


# -- arbitrary bytes: only DataError may come out -------------------------------------------------------

TABLE_SCHEMA = table_schema(
    "click", categorical=["ad", "site"], numeric=["price"], multivalent=["tags"], encodings={"site": "int"}
)
TABLE_HEADER = b"click,ad,site,price,tags\n"
table_read = reading(functools.partial(table_chunks, schema=TABLE_SCHEMA), 5, 128)


def movielens_read(path: Path, bad: BadRows) -> Iterator[TextChunk]:
    users, movies = movielens_side_tables(path.parent)
    files = MovieLensFiles(MovieLensVariant.ML_1M, path, users, movies)
    return movielens_chunks(files, chunk_rows=5, bad_rows=bad, block_bytes=128)


def side_table_read(which: str, variant: MovieLensVariant) -> Read:
    """A MovieLens read whose users or movies table is the fuzzed file (the ratings stay valid)."""

    def read(path: Path, bad: BadRows) -> Iterator[TextChunk]:
        side = path.parent / "side"
        side.mkdir(exist_ok=True)
        ratings = side / "ratings.dat"
        if variant is MovieLensVariant.ML_1M:
            users, movies = movielens_side_tables(side)
            ratings.write_bytes(b"1::1::5::978300760\n2::5::1::978302109\n")
        else:
            users, movies = side / "u.user", side / "u.item"
            users.write_bytes(b"1|24|M|technician|85711\n2|53|F|other|94043\n")
            movies.write_bytes(ML100K_ITEM + ML100K_ITEM.replace(b"1|Toy", b"2|Golden"))
            ratings.write_bytes(b"1\t1\t5\t978300760\n2\t2\t1\t978302109\n")
        table = {"users": users, "movies": movies}
        table[which] = path
        files = MovieLensFiles(variant, ratings, table["users"], table["movies"])
        return movielens_chunks(files, chunk_rows=5, bad_rows=bad, block_bytes=128)

    return read


ML100K_ITEM = b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
READERS: dict[str, tuple[Read, Any, bytes]] = {
    "avazu": (
        reading(avazu_chunks, 5, 128),
        avazu_schema(),
        b"1,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,a99f214a,ddd2926e,"
        b"44956a24,1,2,15706,320,50,1722,0,35,-1,79\n",
    ),
    "criteo": (
        reading(criteo_chunks, 5, 128),
        criteo_schema(),
        b"0\t1\t1\t5\t0\t1382\t4\t15\t2\t181\t1\t2\t\t2\t68fd1e64\t80e26c9b\tfb936136\t7b4723c4\t25c83c98\t"
        b"7e0ccccf\tde7995b8\t1f89b562\ta73ee510\ta8cd5504\tb2cb9c98\t37c9c164\t2824a5f6\t1adce6ef\t8ba8b39a\t"
        b"891b62e7\te5ba7672\tf54016b9\t21ddcdc9\tb1252a9d\t07b5194c\t\t3a171ecb\tc5c50484\te8b83407\t9727dd16\n",
    ),
    "frappe": (
        reading(frappe_chunks, 5, 128),
        frappe_schema(),
        b"1 451:1 4149:1 5041:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:1\r\n",
    ),
    "movielens": (movielens_read, movielens_schema(), b"1::1::5::978300760\n2::5::1::978302109\n"),
    "table": (table_read, TABLE_SCHEMA, TABLE_HEADER + b'1,"a,b",7,2.5,x|y\n0,c,,,\n'),
    "criteo-csv": (
        reading(criteo_chunks, 5, 128),
        criteo_schema(),
        b"label,"
        + ",".join([f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]).encode()
        + b"\n"
        + b"0,,3.0,260.0,,17668.0,,,33.0,,,,,,05db9164,08d6d899,9143c832,f56b7dd5,25c83c98,7e0ccccf,"
        b"df5c2d18,0b153874,a73ee510,8f48ce11,a7b606c4,ae1bb660,eae197fd,b28479f6,bfef54b3,bad5ee18,"
        b"e5ba7672,87c6f83c,,,0429f84b,,3a171ecb,c0d61a5c,,\n",
    ),
    "movielens-users-1m": (
        side_table_read("users", MovieLensVariant.ML_1M),
        movielens_schema(),
        b"1::F::1::10::48067\n",
    ),
    "movielens-movies-1m": (
        side_table_read("movies", MovieLensVariant.ML_1M),
        movielens_schema(),
        b"1::Toy Story (1995)::A|B\n",
    ),
    "movielens-users-100k": (
        side_table_read("users", MovieLensVariant.ML_100K),
        movielens_schema(),
        b"1|24|M|technician|85711\n",
    ),
    "movielens-items-100k": (
        side_table_read("movies", MovieLensVariant.ML_100K),
        movielens_schema(),
        ML100K_ITEM,
    ),
}


def expect_clean(read: Read, schema: Any, path: Path) -> None:
    for policy in BadRowPolicy:
        try:
            for chunk in read(path, BadRows(policy)):
                encode_frame(chunk.frame, schema)
        except DataError as error:
            assert str(path.parent) in str(error)  # names the file (and line) at fault


@settings(FUZZ, max_examples=100)  # ten readers
@given(
    st.sampled_from(sorted(READERS)),
    st.binary(max_size=600),
    st.sampled_from(["replace", "append", "splice", "truncate"]),
    st.integers(0, 10**6),
)
def test_arbitrary_bytes_give_a_clear_error_or_counted_skips(name, blob, how, cut):
    read, schema, valid = READERS[name]
    body = valid * 3
    data = {
        "replace": blob,
        "append": body + blob,
        "splice": body[: cut % (len(body) + 1)] + blob + body[cut % (len(body) + 1) :],
        "truncate": body[: cut % (len(body) + 1)],
    }[how]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ratings.dat"
        path.write_bytes(data)
        expect_clean(read, schema, path)


@pytest.mark.parametrize("name", sorted(READERS))
def test_empty_and_blank_files(name, tmp_path):
    read, schema, _ = READERS[name]
    path = tmp_path / "ratings.dat"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="file is empty"):
        list(read(path, BadRows(BadRowPolicy.SKIP)))
    path.write_bytes(b"\n\r\n\n")
    expect_clean(read, schema, path)


@pytest.mark.parametrize("name", sorted(READERS))
def test_huge_lines_and_values(name, tmp_path):
    read, schema, valid = READERS[name]
    path = tmp_path / "ratings.dat"
    path.write_bytes(valid + b"9" * 300_000 + b"\n" + valid.replace(b"1", b"1" + b"0" * 400, 2))
    expect_clean(read, schema, path)


def test_parquet_garbage_is_a_clear_error(tmp_path):
    frame = pl.DataFrame({"click": [1, 0], "ad": ["a", "b"], "site": [1, 2], "price": [1.0, None]})
    frame = frame.with_columns(pl.Series("tags", [["x"], []]))
    path = tmp_path / "t.parquet"
    frame.write_parquet(path)
    data = path.read_bytes()
    for cut in (4, 12, len(data) // 2, len(data) - 9, len(data) - 1):
        path.write_bytes(data[:cut])
        expect_clean(table_read, TABLE_SCHEMA, path)
    path.write_bytes(b"PAR1" + b"\x00" * 40 + b"PAR1")
    expect_clean(table_read, TABLE_SCHEMA, path)
