"""The mapping from raw values to rows is part of every saved model: these goldens catch any change."""

from __future__ import annotations

import os
import subprocess
import sys

import polars as pl
import torch

from featmux.features import ValueEncoding
from featmux.hashing import MISSING, feature_salt, fingerprint, hash_to_rows, splitmix64, string_fingerprint

MASK = (1 << 64) - 1


def reference_splitmix64(x: int) -> int:
    """Textbook splitmix64 finalizer on Python ints (unsigned 64-bit)."""
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def to_signed(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def test_string_fingerprint_goldens():
    assert [string_fingerprint(s) for s in ["", "a", "user_42", "ünï"]] == [
        3244421341483603138,  # xxh3-64("") = 0x2D06800538D394C2, the published test vector
        -1817709641818812897,
        1647113857750896165,
        6574230039953973664,
    ]
    assert MISSING == -7181877057486046819


def test_salt_goldens_come_from_names():
    assert feature_salt("user", 0) == -3402756523783712195
    assert feature_salt("user", 1) == 6057557659252335584
    assert feature_salt("item", 0) == 1603314182314418802


def test_splitmix64_matches_reference_and_goldens():
    values = [0, 1, -1, 2**62, 123456789, -(2**63)]
    got = splitmix64(torch.tensor(values)).tolist()
    assert got == [to_signed(reference_splitmix64(v & MASK)) for v in values]
    assert got[:5] == [
        -2152535657050944081,
        -7995527694508729151,
        -1956407806741107680,
        47939714376772075,
        2466975172287755897,
    ]


def test_rows_goldens_and_range():
    x = torch.tensor([0, 1, -1, 2**62, 123456789])
    assert hash_to_rows(x, feature_salt("user"), 1000).tolist() == [601, 511, 941, 320, 139]
    rows = hash_to_rows(torch.arange(-5000, 5000), feature_salt("f"), 97)
    assert rows.min() >= 0 and rows.max() < 97
    # roughly uniform: every bucket used, none wildly overfull
    counts = torch.bincount(rows, minlength=97)
    assert counts.min() > 50 and counts.max() < 160


def test_vectorized_fingerprints_agree_with_scalar():
    values = pl.Series(["a", "b", None, "", "a", "ünï"])
    fps = fingerprint(values, ValueEncoding.STRING).tolist()
    assert fps == [
        string_fingerprint("a"),
        string_fingerprint("b"),
        MISSING,
        MISSING,
        string_fingerprint("a"),
        string_fingerprint("ünï"),
    ]
    assert fingerprint(pl.Series(["ff", "", None, "68fd1e64"]), ValueEncoding.HEX).tolist() == [
        255,
        MISSING,
        MISSING,
        0x68FD1E64,
    ]
    assert fingerprint(pl.Series([1, None, -3]), ValueEncoding.INT).tolist() == [1, MISSING, -3]
    assert fingerprint(pl.Series(["7", " 8", ""]), ValueEncoding.INT).tolist() == [7, 8, MISSING]


def test_hex_rejects_non_hex():
    import pytest

    with pytest.raises(ValueError, match="not hexadecimal"):
        fingerprint(pl.Series(["ff", "zz"]), ValueEncoding.HEX)


_PROBE = (
    "import torch; from featmux.hashing import *; "
    "print(string_fingerprint('user_42'), feature_salt('ad', 3), "
    "hash_to_rows(torch.tensor([7, 8, 9]), feature_salt('ad', 3), 1 << 20).tolist())"
)


def test_identical_across_processes_and_hash_seeds():
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(proc.stdout)
    assert len(outputs) == 1
    expected = f"{string_fingerprint('user_42')} {feature_salt('ad', 3)} " + str(
        hash_to_rows(torch.tensor([7, 8, 9]), feature_salt("ad", 3), 1 << 20).tolist()
    )
    assert outputs.pop().strip() == expected
