"""Per-feature value counts over a training split, fitted in one streaming pass.

The collisionless table needs the vocabulary itself; per-feature hashing and budgets expressed as a
fraction of the collisionless size need only the cardinalities. Values are fingerprints (int64).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.concatenate([k for k, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inverse, weights=counts, minlength=uniq.size).astype(np.int64)


@dataclass(frozen=True)
class FeatureVocabulary:
    """Sorted distinct fingerprints of one feature with their counts."""

    keys: np.ndarray  # int64, ascending
    counts: np.ndarray  # int64, same length

    def kept(self, min_count: int = 1) -> np.ndarray:
        """Keys seen at least `min_count` times (still sorted)."""
        return self.keys if min_count <= 1 else self.keys[self.counts >= min_count]

    def cardinality(self, min_count: int = 1) -> int:
        return int(self.keys.size if min_count <= 1 else np.count_nonzero(self.counts >= min_count))


class Vocabulary:
    """Value counts of each categorical feature, built incrementally.

    Args:
        feature_names: the features to count.

    Example:
        >>> vocab = Vocabulary(["user", "item"])
        >>> vocab.update("user", np.array([3, 3, 7]))
        >>> vocab.cardinality("user")
        2
    """

    _FLUSH_PARTS = 64

    def __init__(self, feature_names: Iterable[str]) -> None:
        self._parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in feature_names}
        self._done: dict[str, FeatureVocabulary] = {}

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self._parts)

    def update(self, name: str, values: np.ndarray) -> None:
        """Count a chunk of fingerprints of feature `name`."""
        if name not in self._parts:
            raise KeyError(f"vocabulary has no feature {name!r}; it counts {list(self._parts)}")
        keys, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
        parts = self._parts[name]
        parts.append((keys, counts.astype(np.int64)))
        self._done.pop(name, None)
        if len(parts) >= self._FLUSH_PARTS:
            self._parts[name] = [_merge(parts)]

    def __getitem__(self, name: str) -> FeatureVocabulary:
        if name not in self._done:
            parts = self._parts[name]
            if not parts:
                empty = np.zeros(0, dtype=np.int64)
                self._done[name] = FeatureVocabulary(empty, empty.copy())
            else:
                merged = _merge(parts)
                self._parts[name] = [merged]
                self._done[name] = FeatureVocabulary(*merged)
        return self._done[name]

    def cardinality(self, name: str, min_count: int = 1) -> int:
        return self[name].cardinality(min_count)

    def cardinalities(self, min_count: int = 1) -> dict[str, int]:
        return {n: self.cardinality(n, min_count) for n in self._parts}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for `np.savez`; `Vocabulary.from_arrays` reverses it."""
        out: dict[str, np.ndarray] = {}
        for name in self._parts:
            fv = self[name]
            out[f"{name}/keys"] = fv.keys
            out[f"{name}/counts"] = fv.counts
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Vocabulary:
        names = [k[: -len("/keys")] for k in arrays if k.endswith("/keys")]
        vocab = cls(names)
        for name in names:
            vocab._parts[name] = [(np.asarray(arrays[f"{name}/keys"]), np.asarray(arrays[f"{name}/counts"]))]
        return vocab
