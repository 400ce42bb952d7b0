"""The collisionless baseline: one row per vocabulary value of each feature, plus an OOV row.

The vocabulary (sorted fingerprints per feature) lives in buffers, so a saved state_dict is a complete
model: serving needs no separate vocabulary file. Lookup is a binary search per feature (torch
searchsorted), vectorized over the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding
from featmux.embeddings.registry import BudgetTarget, EmbeddingMethod, VocabularyStats, register
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature, check_shares, row_owners


class CollisionlessEmbedding(TableEmbedding):
    """One private row per known value of each feature; unseen values share the feature's OOV row.

    Feature f owns rows [start_f, start_f + |V_f| + 1): its OOV row first, then its values in
    fingerprint order. A feature with `share_with` owns none: it looks its values up in its owner's
    vocabulary and reads the owner's rows (values unknown to the owner read the owner's OOV row). Use
    `from_vocabulary` to build it from data; the constructor allocates a layer of
    the right shape whose vocabulary buffers are filled by `load_state_dict` (checkpoint restore).

    Args:
        features: the categorical features.
        embedding_dim: D.
        vocab_sizes: |V_f| for each feature name.
        device: where to allocate.

    Example:
        >>> layer = CollisionlessEmbedding.from_vocabulary(schema.categorical, vocab, embedding_dim=10)
        >>> layer(sparse).shape  # [B, F, 10]
    """

    method = "collisionless"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        vocab_sizes: Mapping[str, int],
        device: torch.device | None = None,
    ) -> None:
        check_shares(features)
        owners = row_owners(features)
        missing = [f.name for f in owners if f.name not in vocab_sizes]
        if missing:
            raise ValueError(f"vocab_sizes lacks feature(s) {missing}")
        self.vocab_sizes = {f.name: int(vocab_sizes[f.name]) for f in owners}
        super().__init__(features, embedding_dim, sum(n + 1 for n in self.vocab_sizes.values()), device)
        order = [*self.univalent, *self.multivalent]
        owned = row_owners(order)  # the blocks, in slot order; a feature with share_with reads its owner's
        sizes = [self.vocab_sizes[f.name] for f in owned]
        starts, key_starts, row, key = [], [], 0, 0
        for n in sizes:
            starts.append(row)
            key_starts.append(key)
            row += n + 1
            key += n
        self._key_slices = [(s, s + n) for s, n in zip(key_starts, sizes, strict=True)]
        block = {f.name: j for j, f in enumerate(owned)}
        # the block (of `row_starts`, `_key_slices`) that each feature, in slot order, reads
        self.owner_index = [block[f.row_owner] for f in order]
        self.register_buffer("keys", torch.zeros(key, dtype=torch.int64, device=device))
        self.register_buffer("row_starts", torch.tensor(starts, dtype=torch.int64, device=device))

    @classmethod
    def from_vocabulary(
        cls,
        features: Sequence[CategoricalFeature],
        vocabulary: Vocabulary,
        embedding_dim: int,
        min_count: int = 1,
        device: torch.device | None = None,
    ) -> CollisionlessEmbedding:
        """Build the layer from fitted value counts; values seen fewer than `min_count` times are OOV."""
        sizes = {f.name: vocabulary[f.name].cardinality(min_count) for f in row_owners(features)}
        layer = cls(features, embedding_dim, sizes, device)
        layer.fill_vocabulary(vocabulary, min_count)
        return layer

    def fill_vocabulary(self, vocabulary: Vocabulary, min_count: int = 1) -> None:
        """Copy the kept values' fingerprints into the `keys` buffer (sizes must match the layer's).

        Args:
            vocabulary: the fitted value counts.
            min_count: values seen fewer times are out of vocabulary.
        """
        order = row_owners([*self.univalent, *self.multivalent])
        kept = {f.name: vocabulary[f.name].kept(min_count) for f in order}
        sizes = {n: k.size for n, k in kept.items()}
        if sizes != self.vocab_sizes:
            raise ValueError(f"vocabulary sizes {sizes} differ from the layer's {self.vocab_sizes}")
        with torch.no_grad():
            self.keys.copy_(
                torch.from_numpy(np.concatenate([np.zeros(0, np.int64)] + [kept[f.name] for f in order]))
            )

    def _rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        index = self.owner_index[index]
        lo, hi = self._key_slices[index]
        keys = self.keys[lo:hi]
        if keys.numel() == 0:
            return self.row_starts[index].expand_as(values)
        pos = torch.searchsorted(keys, values)
        hit = keys[pos.clamp(max=keys.numel() - 1)] == values
        return self.row_starts[index] + torch.where(hit, pos + 1, torch.zeros_like(pos))

    def univalent_rows(self, ids: torch.Tensor) -> torch.Tensor:
        # one binary search per feature: keys differ in length, so a loop over F (not over rows)
        cols = [self._rows(i, ids[:, i].contiguous()) for i in range(len(self.univalent))]
        return torch.stack(cols, dim=1)  # [B, F_u]

    def bag_rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        return self._rows(len(self.univalent) + index, values).unsqueeze(1)  # [L, 1]

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "vocab_sizes": dict(self.vocab_sizes),
        }


class CollisionlessMethod(EmbeddingMethod):
    """`collisionless`: the fixed-size reference (one row per training value); it takes no budget."""

    name = "collisionless"
    budgeted = False
    shares_rows = True

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: Any,
    ) -> dict[str, Any]:
        if not stats.known:
            raise ValueError("the collisionless table needs a vocabulary")
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "vocab_sizes": {f.name: stats.cardinalities[f.name] for f in row_owners(features)},
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> CollisionlessEmbedding:
        return CollisionlessEmbedding(features, int(config["embedding_dim"]), config["vocab_sizes"], device)

    def fill(self, layer: FeatureEmbedding, vocabulary: Vocabulary, min_count: int) -> None:
        assert isinstance(layer, CollisionlessEmbedding)
        layer.fill_vocabulary(vocabulary, min_count)


register(CollisionlessMethod())
