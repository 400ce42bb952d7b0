"""Stable hashing: fingerprints of raw values (data side) and salted mixing into rows (model side)."""

from featmux.hashing.fingerprint import MISSING, fingerprint, string_fingerprint
from featmux.hashing.mixer import feature_salt, hash_to_rows, salted_rows, splitmix64

__all__ = [
    "MISSING",
    "feature_salt",
    "fingerprint",
    "hash_to_rows",
    "salted_rows",
    "splitmix64",
    "string_fingerprint",
]
