"""Streaming, validating reader of delimited text files (TSV, CSV, `::`-separated, libFM).

A file is read in byte blocks split at newlines, so memory is bounded by the block size whatever the
file size. Each block is checked with numpy on its bytes (encoding, field count per line) and parsed
by polars into String columns; every row keeps its 1-based line number in the file, so later checks
(label, numeric fields) can name the exact line. Malformed lines go through `BadRows`: they stop the
read (`BadRowPolicy.RAISE`) or are dropped and counted (`BadRowPolicy.SKIP`).

Handled: header line or not, CRLF, a final line without newline, blank lines (skipped), a UTF-8 byte
order mark, multi-character separators (MovieLens `::`), latin-1 input (re-encoded to UTF-8), and, for
generic CSV, double-quoted fields (one line per row: quoted fields may not contain newlines).

Example:
    >>> fmt = TextFormat("\\t", num_fields=40)
    >>> for chunk in iter_text("train.txt", fmt, chunk_rows=100_000):
    ...     chunk.frame, chunk.lines  # String columns column_1..column_40, int64 line numbers
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypedDict

import numpy as np
import polars as pl

from featmux.data.errors import BadRows, DataError

DEFAULT_CHUNK_ROWS = 262_144
DEFAULT_BLOCK_BYTES = 8 << 20  # large enough to amortise per-block costs, small enough to stay cheap

_NEWLINE = 0x0A
_QUOTE = 0x22
_BOM = b"\xef\xbb\xbf"
# single bytes that stand in for a multi-character separator; the first one absent from a block is used
_SUBSTITUTES = (b"\x1f", b"\x1e", b"\x1d", b"\x1c", b"\x01", b"\x02", b"\x03")
_ENCODINGS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "iso-8859-1": "latin-1",
}


@dataclass(frozen=True)
class TextFormat:
    """How a delimited text file is laid out.

    Args:
        separator: field separator; may be several characters (e.g. "::").
        header: the first line holds the column names.
        encoding: "utf-8" (validated) or "latin-1" (every byte is valid; re-encoded to UTF-8).
        quoting: fields may be enclosed in double quotes (generic CSV); off for the raw dataset formats,
            where a quote is an ordinary character.
        names: column names when there is no header (default column_1, column_2, ...).
        num_fields: expected fields per line; default: len(names), else the header's, else the first line's.

    Example:
        >>> TextFormat("::", encoding="latin-1", names=("movie_id", "title", "genres"))  # MovieLens-1M
        >>> TextFormat(",", header=True, quoting=True)  # a user's CSV
    """

    separator: str
    header: bool = False
    encoding: str = "utf-8"
    quoting: bool = False
    names: tuple[str, ...] | None = None
    num_fields: int | None = None

    def __post_init__(self) -> None:
        if not self.separator or "\n" in self.separator or "\r" in self.separator:
            raise ValueError(f"separator {self.separator!r} must be non-empty and hold no line break")
        if self.encoding.lower() not in _ENCODINGS:
            supported = sorted(set(_ENCODINGS))
            raise ValueError(f"encoding {self.encoding!r} is not supported; use one of {supported}")
        if self.quoting and (self.separator == '"' or len(self.separator.encode()) != 1):
            raise ValueError("a quoted format needs a single-byte separator other than '\"'")
        if self.names is not None:
            object.__setattr__(self, "names", tuple(self.names))
            if len(set(self.names)) != len(self.names):
                raise ValueError(f"column names {self.names} are not unique")
            if self.num_fields is not None and self.num_fields != len(self.names):
                raise ValueError(f"num_fields={self.num_fields} but {len(self.names)} names were given")
        if self.num_fields is not None and self.num_fields < 1:
            raise ValueError(f"num_fields must be >= 1, got {self.num_fields}")


# line numbers (int64 [n]) -> bool [n], the lines to read; e.g. the rows of one split of a file
LineFilter = Callable[[np.ndarray], np.ndarray]


class ReadOptions(TypedDict, total=False):
    """The keyword options of every streaming reader (`iter_text`, and each dataset's `*_chunks`).

    Args:
        chunk_rows: at most this many rows per chunk (default `DEFAULT_CHUNK_ROWS`).
        bad_rows: where malformed rows go (default: raise a `DataError` at the first).
        block_bytes: bytes of a text file read at a time (default `DEFAULT_BLOCK_BYTES`).
        line_filter: selects the lines to read by line number, e.g. one split of the file (default: all).

    Example:
        >>> criteo_chunks("train.txt", chunk_rows=100_000, bad_rows=BadRows(BadRowPolicy.SKIP))
    """

    chunk_rows: int
    bad_rows: BadRows | None
    block_bytes: int
    line_filter: LineFilter | None


def options_bad_rows(options: ReadOptions) -> BadRows:
    """The `bad_rows` of `options`, or the default: a new `BadRows()` (raise at the first bad row)."""
    bad_rows = options.get("bad_rows")
    return bad_rows if bad_rows is not None else BadRows()


class TextChunk(NamedTuple):
    """Rows of a text file: `frame` (one column per field) and `lines` (int64 [n], 1-based line numbers).

    Readers of non-text sources (Parquet) put 0-based row indices in `lines` instead.
    """

    frame: pl.DataFrame
    lines: np.ndarray


class Check(NamedTuple):
    """One row-level validation result: `bad` (bool [n]) marks rows where `field` breaks `message`."""

    field: str | None
    message: str
    bad: np.ndarray


def row_location(path: str | Path, row: int) -> str:
    """Where a row of a file without lines (Parquet) is, for `DataError.path`.

    Args:
        path: the file.
        row: 0-based row index.

    Returns:
        `path[row 17]`.
    """
    return f"{path}[row {row}]"


def report_bad_rows(
    checks: Sequence[Check],
    lines: np.ndarray,
    path: str | Path,
    bad_rows: BadRows,
    lines_are_rows: bool = False,
) -> np.ndarray | None:
    """Report the rows that fail `checks` to `bad_rows`; return the mask of rows to keep.

    A row failing several checks is reported once, for the first failing check in `checks`. With
    `BadRowPolicy.RAISE` the error of the earliest bad row is raised; with SKIP each (field, message)
    group is counted with one `BadRows.handle` call, so this stays vectorized.

    Args:
        checks: validation results over n rows, in priority order.
        lines: int64 [n] line number of each row (or 0-based row index when `lines_are_rows`).
        path: the file, named in errors.
        bad_rows: where bad rows go.
        lines_are_rows: `lines` holds 0-based row indices (Parquet) rather than line numbers.

    Returns:
        bool [n], True for the rows that pass every check, or None when all of them pass.
    """
    taken = np.zeros(lines.shape[0], dtype=bool)
    groups: list[tuple[int, Check, int]] = []  # (first bad position, check, count)
    for check in checks:
        fresh = np.asarray(check.bad, dtype=bool) & ~taken
        count = int(fresh.sum())
        if count:
            groups.append((int(np.argmax(fresh)), check, count))
            taken |= fresh
    if not groups:
        return None
    groups.sort(key=lambda g: g[0])
    for first, check, count in groups:
        pos = int(lines[first])
        if lines_are_rows:
            error = DataError(row_location(path, pos), None, check.field, check.message)
        else:
            error = DataError(path, pos, check.field, check.message)
        bad_rows.handle(error, count)
    return ~taken


def reject_rows(
    chunk: TextChunk,
    checks: Sequence[Check],
    path: str | Path,
    bad_rows: BadRows,
    lines_are_rows: bool = False,
) -> TextChunk:
    """`report_bad_rows` on a chunk, returning the chunk without its bad rows (same object if none)."""
    keep = report_bad_rows(checks, chunk.lines, path, bad_rows, lines_are_rows)
    if keep is None:
        return chunk
    return TextChunk(chunk.frame.filter(pl.Series(keep)), chunk.lines[keep])


def rechunk(chunks: Iterable[TextChunk], chunk_rows: int) -> Iterator[TextChunk]:
    """Regroup chunks into chunks of exactly `chunk_rows` rows (the last one may be shorter).

    Readers drop rows (blank lines, bad rows, filtered labels), so their raw chunks vary in size; this
    makes chunk boundaries depend only on `chunk_rows` and the surviving rows.

    Args:
        chunks: rows with their line numbers, in order.
        chunk_rows: rows per output chunk.

    Returns:
        An iterator of chunks holding the same rows in the same order.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    pending: list[TextChunk] = []
    size = 0
    for chunk in chunks:
        if chunk.frame.height == 0:
            continue
        pending.append(chunk)
        size += chunk.frame.height
        if size < chunk_rows:
            continue
        frame = pl.concat([c.frame for c in pending], how="vertical", rechunk=False)
        lines = np.concatenate([c.lines for c in pending])
        start = 0
        while size - start >= chunk_rows:
            yield TextChunk(frame.slice(start, chunk_rows), lines[start : start + chunk_rows])
            start += chunk_rows
        pending = [TextChunk(frame.slice(start), lines[start:])] if start < size else []
        size -= start
    if size:
        yield TextChunk(
            pl.concat([c.frame for c in pending], how="vertical"), np.concatenate([c.lines for c in pending])
        )


def frames(chunks: Iterable[TextChunk]) -> Iterator[pl.DataFrame]:
    """The frames of `chunks` (line numbers dropped).

    Args:
        chunks: rows with their line numbers.

    Returns:
        An iterator of the frames.
    """
    for chunk in chunks:
        yield chunk.frame


def _encoding(fmt: TextFormat) -> str:
    return _ENCODINGS[fmt.encoding.lower()]


def _split_header(text: str, fmt: TextFormat) -> list[str]:
    if fmt.quoting:
        fields = next(csv.reader([text], delimiter=fmt.separator, quotechar='"'), [])
    else:
        fields = text.split(fmt.separator)
    return [f.strip() for f in fields]


def _first_line(path: Path, limit: int = 1 << 20) -> tuple[bytes, bool]:
    """The first line of `path` without its line break, and whether the file is empty."""
    with path.open("rb") as handle:
        head = handle.read(limit)
    if not head:
        return b"", True
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
    end = head.find(b"\n")
    line = head if end < 0 else head[:end]
    return line.rstrip(b"\r"), False


def peek_line(path: str | Path) -> str:
    """The first line of a file, for sniffing its layout (separator, header) before reading; never for data.

    Args:
        path: the file.

    Returns:
        The line without its line break, decoded leniently as UTF-8; "" for an empty file.
    """
    line, _ = _first_line(Path(path))
    return line.decode("utf-8", errors="replace")


def read_header(path: str | Path, fmt: TextFormat) -> tuple[str, ...]:
    """The column names of a file: its header line if `fmt.header`, else `fmt.names` or column_1...

    Args:
        path: the file.
        fmt: its layout.

    Returns:
        The names, one per field.

    Raises:
        DataError: the file is empty, or its header is not valid text or names a column twice.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    line, empty = _first_line(path)
    if empty:
        expected = " (expected a header line)" if fmt.header else ""
        raise DataError(path, None, None, f"file is empty{expected}")
    if not fmt.header:
        if fmt.names is not None:
            return fmt.names
        count = fmt.num_fields or _count_fields(line, fmt)
        return tuple(f"column_{i + 1}" for i in range(count))
    try:
        text = line.decode(_encoding(fmt))
    except UnicodeDecodeError:
        raise DataError(path, 1, None, "header is not valid UTF-8") from None
    names = _split_header(text, fmt)
    if fmt.names is not None and tuple(names) != fmt.names:
        raise DataError(path, 1, None, f"header {names} differs from the expected columns {list(fmt.names)}")
    if any(not n for n in names):
        raise DataError(path, 1, None, f"header {names} has an empty column name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(path, 1, None, f"header names column(s) {duplicates} more than once")
    if fmt.num_fields is not None and len(names) != fmt.num_fields:
        raise DataError(path, 1, None, f"expected {fmt.num_fields} fields, found {len(names)}")
    return tuple(names)


def _count_fields(line: bytes, fmt: TextFormat) -> int:
    if fmt.quoting:
        text = line.decode(_encoding(fmt), errors="replace")
        return len(next(csv.reader([text], delimiter=fmt.separator, quotechar='"'), [""]))
    return line.count(fmt.separator.encode(_encoding(fmt))) + 1


def _blocks(path: Path, block_bytes: int) -> Iterator[bytes]:
    """Byte blocks of whole lines (each ends with a newline; a final line without one gets one)."""
    rest = b""
    first = True
    with path.open("rb") as handle:
        while True:
            data = handle.read(block_bytes)
            if first:
                first = False
                if data.startswith(_BOM):
                    data = data[len(_BOM) :]
            if not data:
                break
            data = rest + data if rest else data
            end = data.rfind(b"\n")
            if end < 0:  # a line longer than a block: keep reading until it ends
                rest = data
                continue
            rest = data[end + 1 :]
            yield data[: end + 1]
    if rest:
        yield rest + b"\n"


class _Block:
    """Lines of one block: `data` (bytes ending with a newline), the start offset and number of each."""

    def __init__(self, data: bytes, first_line: int) -> None:
        self.data = data
        arr = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(arr == _NEWLINE)
        self.starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        self.ends = ends.astype(np.int64)  # position of each line's newline
        self.lines = np.arange(first_line, first_line + ends.size, dtype=np.int64)

    def __len__(self) -> int:
        return self.lines.size

    def keep(self, mask: np.ndarray) -> _Block:
        """The block restricted to the lines where `mask` is True (bytes copied once, vectorized)."""
        if mask.all():
            return self
        lengths = self.ends - self.starts + 1
        byte_mask = np.repeat(mask, lengths)
        out = _Block.__new__(_Block)
        out.data = np.frombuffer(self.data, dtype=np.uint8)[byte_mask].tobytes()
        kept = lengths[mask]
        out.ends = np.cumsum(kept) - 1
        out.starts = out.ends - kept + 1
        out.lines = self.lines[mask]
        return out


def _crlf_to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n") if b"\r" in data else data


def _invalid_utf8_lines(block: _Block) -> np.ndarray:
    """Indices of the lines of `block` that are not valid UTF-8.

    Pure ASCII needs no check, a valid block one C-level decode; only when that fails are the lines
    holding non-ASCII bytes decoded one by one (a Python loop, but over those lines only).
    """
    arr = np.frombuffer(block.data, dtype=np.uint8)
    high = np.flatnonzero(arr >= 0x80)
    if high.size == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        block.data.decode("utf-8")
        return np.zeros(0, dtype=np.int64)
    except UnicodeDecodeError:
        pass
    bad = []
    for index in np.unique(np.searchsorted(block.ends, high)).tolist():
        try:
            block.data[block.starts[index] : block.ends[index]].decode("utf-8")
        except UnicodeDecodeError:
            bad.append(index)
    return np.asarray(bad, dtype=np.int64)


def _separator_counts(block: _Block, sep: int, quoting: bool) -> tuple[np.ndarray, np.ndarray]:
    """Separators per line (outside quotes when `quoting`) and a mask of lines with unbalanced quotes."""
    arr = np.frombuffer(block.data, dtype=np.uint8)
    is_sep = arr == sep
    unbalanced = np.zeros(len(block), dtype=bool)
    if quoting and (arr == _QUOTE).any():
        is_quote = (arr == _QUOTE).astype(np.uint8)
        parity = np.bitwise_xor.accumulate(is_quote)  # 1 inside a quoted field (counted from block start)
        # parity before each line's first byte: undo the carry-over of earlier lines' quotes
        before = np.where(block.starts > 0, parity[np.maximum(block.starts - 1, 0)], 0).astype(np.uint8)
        unbalanced = (parity[block.ends] ^ before).astype(bool)
        lengths = block.ends - block.starts + 1
        inside = (parity ^ np.repeat(before, lengths)).astype(bool)
        is_sep &= ~inside
    # separators per line = separators before its newline - separators before its start (sorted positions)
    positions = np.flatnonzero(is_sep)
    counts = np.searchsorted(positions, block.ends) - np.searchsorted(positions, block.starts)
    return counts.astype(np.int64), unbalanced


def _pick_substitute(data: bytes) -> bytes:
    for sub in _SUBSTITUTES:
        if sub not in data:
            return sub
    raise ValueError("no free control byte to stand in for a multi-character separator")


def _locate_parse_error(block: _Block, fmt: TextFormat, num_fields: int) -> int | None:
    """Index of the first line of `block` that Python's csv module cannot parse into `num_fields` fields."""
    text = block.data.decode("utf-8", errors="replace")
    for index, line in enumerate(text.split("\n")[: len(block)]):
        try:
            row = next(csv.reader([line], delimiter=fmt.separator, quotechar='"', strict=True), [])
        except csv.Error:
            return index
        if len(row) != num_fields:
            return index
    return None


def _parse(block: _Block, fmt: TextFormat, names: Sequence[str], sep: str, path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(
            io.BytesIO(block.data),
            has_header=False,
            separator=sep,
            quote_char='"' if fmt.quoting else None,
            schema=dict.fromkeys(names, pl.String),
            comment_prefix=None,
            eol_char="\n",
            raise_if_empty=False,
            truncate_ragged_lines=False,
        )
    except (pl.exceptions.PolarsError, ValueError) as error:
        index = _locate_parse_error(block, fmt, len(names)) if fmt.quoting else None
        line = int(block.lines[index]) if index is not None else int(block.lines[0])
        raise DataError(path, line, None, f"could not parse the line ({error.__class__.__name__})") from error


def iter_text(
    path: str | Path,
    fmt: TextFormat,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    bad_rows: BadRows | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    line_filter: LineFilter | None = None,
) -> Iterator[TextChunk]:
    """Stream the rows of a delimited text file as String columns with their line numbers.

    Args:
        path: the file.
        fmt: its layout.
        chunk_rows: at most this many rows per chunk.
        bad_rows: where malformed lines go (default: raise at the first one).
        block_bytes: bytes read at a time (a line longer than this is still read whole).
        line_filter: selects the lines to read by line number, before any check (lines it drops are
            neither parsed nor reported).

    Returns:
        An iterator of `TextChunk`s: String columns named as `read_header` says (empty fields are null)
        and the 1-based line number of each row. Blank lines are skipped.

    Raises:
        DataError: the file is empty, or a line is malformed (invalid UTF-8, wrong number of fields,
            unbalanced quotes) under `BadRowPolicy.RAISE`.
    """
    path = Path(path)
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    names = read_header(path, fmt)
    num_fields = len(names)
    encoding = _encoding(fmt)
    sep = fmt.separator.encode("utf-8")
    next_line = 1
    skip_header = fmt.header
    for raw in _blocks(path, block_bytes):
        if encoding == "latin-1":
            raw = raw.decode("latin-1").encode("utf-8")  # every byte is valid latin-1; newlines stay put
        data = _crlf_to_lf(raw)
        block_sep = sep
        if len(sep) > 1:  # polars wants one byte: stand in an unused one (same line count: no newline in it)
            block_sep = _pick_substitute(data)
            data = data.replace(sep, block_sep)
        block = _Block(data, next_line)
        next_line += len(block)
        if skip_header:
            skip_header = False
            block = block.keep(np.arange(len(block)) > 0)
        block = block.keep(block.ends > block.starts)  # blank lines
        if line_filter is not None and len(block):
            block = block.keep(np.asarray(line_filter(block.lines), dtype=bool))
        if not len(block):
            continue
        checks: list[Check] = []
        if encoding == "utf-8":
            bad = np.zeros(len(block), dtype=bool)
            bad[_invalid_utf8_lines(block)] = True
            checks.append(Check(None, "not valid UTF-8", bad))
        counts, unbalanced = _separator_counts(block, block_sep[0], fmt.quoting)
        checks.append(Check(None, "unbalanced quotes", unbalanced))
        found = counts + 1
        for value in np.unique(found[found != num_fields]):
            checks.append(Check(None, f"expected {num_fields} fields, found {value}", found == value))
        keep = report_bad_rows(checks, block.lines, path, bad_rows)
        if keep is not None:
            block = block.keep(keep)
            if not len(block):
                continue
        frame = _parse(block, fmt, names, block_sep.decode("latin-1"), path)
        for start in range(0, frame.height, chunk_rows):
            yield TextChunk(frame.slice(start, chunk_rows), block.lines[start : start + chunk_rows])
