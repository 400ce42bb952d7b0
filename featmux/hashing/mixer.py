"""Salted 64-bit mixing in torch: (fingerprint, feature salt) -> row of a hashed table.

    row = splitmix64(splitmix64(fingerprint) ^ salt) mod rows

The inner mix is done once per value; each probe (chunk) then costs one more mix. Salts come from the
feature's *name* and the chunk index (`feature_salt`), never from the feature's position, so adding or
reordering features does not rehash the others. torch int64 arithmetic wraps modulo 2^64 like uint64,
and `>>` is arithmetic, so logical shifts mask off the sign-extended bits.
"""

from __future__ import annotations

import torch
import xxhash

_INT64_MAX = (1 << 63) - 1


def _signed(unsigned: int) -> int:
    return unsigned - (1 << 64) if unsigned >= (1 << 63) else unsigned


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _xorshift_(z: torch.Tensor, bits: int) -> torch.Tensor:
    """z ^= z >>> bits (logical shift of int64 viewed as uint64), in place: one temporary."""
    shifted = z >> bits
    shifted &= (1 << (64 - bits)) - 1
    return z.bitwise_xor_(shifted)


def _splitmix64_(z: torch.Tensor) -> torch.Tensor:
    """splitmix64 of a tensor the caller owns, in place (no copy of the input)."""
    z.add_(_GOLDEN)
    _xorshift_(z, 30).mul_(_M1)
    _xorshift_(z, 27).mul_(_M2)
    return _xorshift_(z, 31)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finalizer (Steele et al. 2014), a bijection on 64-bit words. Input/output int64.

    Computed with in-place ops on one fresh tensor: an int64 [B, F] batch costs one allocation and a
    temporary, not one allocation per operation.
    """
    return _splitmix64_(x + 0)


def feature_salt(name: str, chunk: int = 0) -> int:
    """The int64 salt of (feature name, chunk index): xxh3-64 of a fixed UTF-8 key, stable everywhere."""
    if chunk < 0:
        raise ValueError(f"chunk index must be >= 0, got {chunk}")
    return _signed(xxhash.xxh3_64_intdigest(f"featmux/salt/{name}/{chunk}".encode()))


def stable_index(key: str, n: int) -> int:
    """An index in [0, n) of a string key: xxh3-64 of its UTF-8 bytes mod n, stable everywhere."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return xxhash.xxh3_64_intdigest(key.encode()) % n


def salted_rows(premixed: torch.Tensor, salts: torch.Tensor, rows: torch.Tensor | int) -> torch.Tensor:
    """Rows in [0, rows) for premixed fingerprints and salts that broadcast against each other.

    Args:
        premixed: int64 `splitmix64(fingerprint)`, e.g. [B, S].
        salts: int64 salts, e.g. [S].
        rows: number of rows to map into (int or int64 tensor broadcastable to the output, e.g. [S]).
    """
    z = _splitmix64_(premixed ^ salts)  # one fresh [B, S] tensor, mixed in place
    z &= _INT64_MAX
    return z.remainder_(rows)


def hash_to_rows(fingerprints: torch.Tensor, salt: int, rows: int) -> torch.Tensor:
    """Rows in [0, rows) of fingerprints under one salt (convenience for single-salt use)."""
    return salted_rows(splitmix64(fingerprints), torch.tensor(salt, dtype=torch.int64), rows)
