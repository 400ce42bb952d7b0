"""Frequency-aware embeddings (AdaEmbed / CAFE style), CLI name `adaptive`.

The hottest values of the training split get exact rows of their own; every other value shares the
hashed rows of one table common to all features (salted per feature, as in Unified Embedding). The
hot set is counted on the training split (the fitted vocabulary): the H most frequent (feature, value)
pairs over all features, so a feature with a heavier head gets more of them. A hot value costs its
row and its int64 key (looked up by binary search, vectorized over the batch); `solve` gives
`hot_share` of the budget to hot values and the rest to shared rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding
from featmux.embeddings.registry import BudgetTarget, EmbeddingMethod, VocabularyStats, register
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64


def hot_keys(vocabulary: Vocabulary, name: str, count: int, min_count: int = 1) -> np.ndarray:
    """The `count` most frequent values of a feature (ties: smaller fingerprint first), sorted."""
    fv = vocabulary[name]
    keep = fv.counts >= min_count
    keys, counts = fv.keys[keep], fv.counts[keep]
    order = np.lexsort((keys, -counts))[:count]
    return np.sort(keys[order])


def hot_key_table(
    vocabulary: Vocabulary, names: Sequence[str], counts: Mapping[str, int], min_count: int = 1
) -> torch.Tensor:
    """The `counts[name]` most frequent values of each feature of `names`, concatenated in that order
    (each feature's sorted), as int64 [sum of counts].

    Raises:
        ValueError: a feature has fewer values than its count.
    """
    parts = [hot_keys(vocabulary, n, counts[n], min_count) for n in names]
    got = {n: p.size for n, p in zip(names, parts, strict=True)}
    if got != {n: counts[n] for n in names}:
        raise ValueError(f"the vocabulary has {got} values for the counts {dict(counts)}")
    return torch.from_numpy(np.concatenate([np.zeros(0, np.int64), *parts]))


def find_keys(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where `values` [...] are in the sorted, non-empty `keys`: (position [...], found [...] bool).

    A value not found gets some position in range (check `found`); a binary search, vectorized.
    """
    pos = torch.searchsorted(keys, values).clamp_(max=keys.numel() - 1)
    return pos, keys[pos] == values


def hottest(counts: Sequence[np.ndarray], costs: Sequence[int], allowance: int) -> list[int]:
    """How many values of each feature are hot: the most frequent values over all features, taken in
    order of count (ties: the earlier feature) while their costs (`costs[f]` each) fit `allowance`.

    Args:
        counts: each feature's training value counts (values below min_count already dropped).
        costs: what one hot value of each feature costs (its rows and its key).
        allowance: what the hot values may cost in all.
    """
    owner = np.concatenate([np.full(c.size, i) for i, c in enumerate(counts)] + [np.zeros(0, np.int64)])
    flat = np.concatenate([*counts, np.zeros(0, np.int64)])
    order = np.argsort(-flat, kind="stable")
    spent = np.cumsum(np.asarray(costs, dtype=np.int64)[owner[order]])
    take = int(np.searchsorted(spent, allowance, side="right"))
    return np.bincount(owner[order[:take]], minlength=len(counts)).astype(int).tolist()


class AdaptiveEmbedding(TableEmbedding):
    """Hot values read their own rows (the first H rows); the others share S hashed rows.

    Args:
        features: the categorical features.
        embedding_dim: D.
        hot: h_f, hot values per feature name (their keys come with `fill_vocabulary` or the state_dict).
        shared_rows: S, rows shared by every feature's other values.
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> layer = AdaptiveEmbedding(features, 16, {"user": 900, "ad": 100}, shared_rows=4000)
        >>> layer.fill_vocabulary(vocabulary)
        >>> layer(sparse).shape  # [B, 2, 16]
    """

    method = "adaptive"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        hot: Mapping[str, int],
        shared_rows: int,
        device: torch.device | None = None,
    ) -> None:
        self.hot = {f.name: int(hot.get(f.name, 0)) for f in features}
        if min(self.hot.values()) < 0 or shared_rows < 1:
            raise ValueError(f"hot counts must be >= 0 and shared_rows >= 1, got {self.hot}, {shared_rows}")
        self.num_hot = sum(self.hot.values())
        self.shared_rows = int(shared_rows)
        super().__init__(features, embedding_dim, self.num_hot + self.shared_rows, device)
        order = [*self.univalent, *self.multivalent]
        sizes = [self.hot[f.name] for f in order]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()
        self._key_slices = [(s, s + n) for s, n in zip(starts, sizes, strict=True)]
        self.register_buffer("keys", torch.zeros(self.num_hot, dtype=torch.int64, device=device))
        self.register_buffer(
            "salts",
            torch.tensor([feature_salt(f.name) for f in order], dtype=torch.int64, device=device),
            persistent=False,
        )

    def fill_vocabulary(self, vocabulary: Vocabulary, min_count: int = 1) -> None:
        """Copy each feature's hottest values (by training count) into `keys`, once before training.

        Args:
            vocabulary: the fitted value counts.
            min_count: values seen fewer times are never hot.
        """
        names = [f.name for f in (*self.univalent, *self.multivalent)]
        with torch.no_grad():
            self.keys.copy_(hot_key_table(vocabulary, names, self.hot, min_count))

    def _rows(self, j: int, values: torch.Tensor) -> torch.Tensor:
        lo, hi = self._key_slices[j]
        shared = self.num_hot + salted_rows(splitmix64(values), self.salts[j], self.shared_rows)
        if hi == lo:
            return shared
        pos, found = find_keys(self.keys[lo:hi], values)
        return torch.where(found, lo + pos, shared)

    def univalent_rows(self, ids: torch.Tensor) -> torch.Tensor:
        # one binary search per feature: hot sets differ in length, so a loop over F (not over rows)
        return torch.stack([self._rows(i, ids[:, i].contiguous()) for i in range(len(self.univalent))], 1)

    def bag_rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        return self._rows(len(self.univalent) + index, values).unsqueeze(1)  # [L, 1]

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "hot": dict(self.hot),
            "shared_rows": self.shared_rows,
        }


@dataclass(frozen=True)
class AdaptiveOptions:
    """Options of the `adaptive` method (`embedding_options`).

    Args:
        hot_share: the share of the budget spent on hot values' rows and keys (0 <= share < 1).

    Example:
        >>> AdaptiveOptions(hot_share=0.3)
    """

    hot_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.hot_share < 1:
            raise ValueError(f"hot_share must be in [0, 1), got {self.hot_share}")


class AdaptiveMethod(EmbeddingMethod):
    """`adaptive`: the H most frequent training values overall get exact rows."""

    name = "adaptive"
    options = AdaptiveOptions

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: AdaptiveOptions,
    ) -> dict[str, Any]:
        per_value, key = self.counted_costs(
            stats, target, "adaptive counts its hot values on the training split"
        )
        row = embedding_dim * per_value
        counts = [stats.vocabulary[f.name].counts for f in features]
        counts = [c[c >= stats.min_count] for c in counts]
        per_feature = hottest(counts, [row + key] * len(counts), int(target.amount * options.hot_share))
        shared = (target.amount - sum(per_feature) * (row + key)) // row
        if shared < 1:
            raise ValueError(f"a budget of {target} is too small for adaptive: no shared row is left")
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "hot": {f.name: int(h) for f, h in zip(features, per_feature, strict=True)},
            "shared_rows": int(shared),
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        return AdaptiveEmbedding(
            features, int(config["embedding_dim"]), config["hot"], int(config["shared_rows"]), device
        )

    def fill(self, layer: FeatureEmbedding, vocabulary: Vocabulary, min_count: int) -> None:
        assert isinstance(layer, AdaptiveEmbedding)
        layer.fill_vocabulary(vocabulary, min_count)


register(AdaptiveMethod())
