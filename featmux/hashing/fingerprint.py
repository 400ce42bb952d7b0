"""Raw values -> 64-bit fingerprints, computed once in the data pipeline.

A fingerprint identifies a raw value independently of any feature; feature salts are applied later,
inside the model (`featmux.hashing.mixer`). Fingerprints are defined by the bytes of the value only,
so they are identical across processes, machines, `PYTHONHASHSEED` values and library versions
(Python's built-in `hash()` is none of these). They are stored as int64 (two's complement of the
unsigned value) because torch has no general uint64 arithmetic.

- STRING: xxh3-64 of the UTF-8 bytes (seed 0). Only the distinct values of a chunk are hashed, so the
  cost is one C call per distinct value, not per row.
- INT: the integer itself.
- HEX: the value parsed as an unsigned hexadecimal integer (Criteo/Avazu categoricals are 32-bit hex).
- missing (null or empty string): `MISSING`, a fixed constant; it is a value like any other and gets
  its own row per feature once salted.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import xxhash

from featmux.features import ValueEncoding


def _to_int64(unsigned: int) -> int:
    return unsigned - (1 << 64) if unsigned >= (1 << 63) else unsigned


def string_fingerprint(value: str) -> int:
    """Fingerprint of one string (int64). The vectorized paths agree with this by construction."""
    return _to_int64(xxhash.xxh3_64_intdigest(value.encode("utf-8")))


MISSING: int = string_fingerprint("\x00featmux:missing")


def _fingerprint_strings(values: pl.Series) -> np.ndarray:
    values = values.cast(pl.String).replace("", None)
    uniques = values.drop_nulls().unique()
    digests = pl.Series(
        [xxhash.xxh3_64_intdigest(v.encode("utf-8")) for v in uniques.to_list()], dtype=pl.UInt64
    )
    mapped = values.replace_strict(
        uniques, digests.reinterpret(signed=True), default=MISSING, return_dtype=pl.Int64
    )
    return mapped.to_numpy()


def _fingerprint_ints(values: pl.Series) -> np.ndarray:
    if values.dtype == pl.UInt64:
        values = values.reinterpret(signed=True)
    return values.cast(pl.Int64).fill_null(MISSING).to_numpy()


def _fingerprint_hex(values: pl.Series) -> np.ndarray:
    text = values.cast(pl.String)
    parsed = text.str.to_integer(base=16, strict=False, dtype=pl.UInt64)
    bad = (parsed.is_null() & text.is_not_null() & (text != "")).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"value {text[row]!r} at row {row} is not hexadecimal")
    return parsed.reinterpret(signed=True).fill_null(MISSING).to_numpy()


def fingerprint(values: pl.Series, encoding: ValueEncoding) -> np.ndarray:
    """Fingerprints of a column of raw values.

    Args:
        values: one column, any polars dtype that matches `encoding`.
        encoding: how to read the values.

    Returns:
        int64 array [len(values)]; nulls and empty strings map to `MISSING`.

    Raises:
        ValueError: a HEX value is not hexadecimal (the message gives its row in `values`).
    """
    if encoding is ValueEncoding.STRING:
        return _fingerprint_strings(values)
    if encoding is ValueEncoding.INT:
        if not values.dtype.is_integer():
            values = values.cast(pl.String).str.strip_chars().replace("", None).cast(pl.Int64, strict=True)
        return _fingerprint_ints(values)
    return _fingerprint_hex(values)
