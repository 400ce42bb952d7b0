"""Per-feature hashing (the "hashing trick"): each feature hashes into a table of its own.

The total row budget is split across features in proportion to their vocabulary sizes and capped at
them (Coleman et al. 2023, sec. 5), so no feature gets more rows than it has values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from featmux.embeddings.base import TableEmbedding
from featmux.embeddings.budget import split_rows
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64


class HashingEmbedding(TableEmbedding):
    """Feature f maps value v to row `start_f + hash_f(v) mod M_f` of its own block of M_f rows.

    Args:
        features: the categorical features.
        embedding_dim: D.
        rows: M_f for each feature name.
        device: where to allocate.

    Example:
        >>> layer = HashingEmbedding.from_budget(schema.categorical, vocab, embedding_dim=10, rows=5000)
        >>> layer(sparse).shape  # [B, F, 10]
    """

    method = "hashing"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        rows: Mapping[str, int],
        device: torch.device | None = None,
    ) -> None:
        missing = [f.name for f in features if f.name not in rows]
        if missing:
            raise ValueError(f"rows lacks feature(s) {missing}")
        bad = {f.name: rows[f.name] for f in features if rows[f.name] < 1}
        if bad:
            raise ValueError(f"every feature needs at least one row, got {bad}")
        self.rows = {f.name: int(rows[f.name]) for f in features}
        super().__init__(features, embedding_dim, sum(self.rows.values()), device)
        order = [*self.univalent, *self.multivalent]
        sizes = [self.rows[f.name] for f in order]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.int64, device=device), persistent=False)
        self.register_buffer(
            "starts", torch.tensor(starts, dtype=torch.int64, device=device), persistent=False
        )
        salts = [feature_salt(f.name) for f in order]
        self.register_buffer("salts", torch.tensor(salts, dtype=torch.int64, device=device), persistent=False)

    @classmethod
    def from_budget(
        cls,
        features: Sequence[CategoricalFeature],
        vocabulary: Vocabulary,
        embedding_dim: int,
        rows: int,
        device: torch.device | None = None,
    ) -> HashingEmbedding:
        """Split `rows` across features in proportion to their cardinality, capped at it."""
        caps = [max(1, vocabulary.cardinality(f.name)) for f in features]
        alloc = split_rows(rows, caps)
        return cls(features, embedding_dim, {f.name: a for f, a in zip(features, alloc, strict=True)}, device)

    def univalent_rows(self, ids: torch.Tensor) -> torch.Tensor:
        n = len(self.univalent)
        return salted_rows(splitmix64(ids), self.salts[:n], self.sizes[:n]).add_(self.starts[:n])  # [B, F_u]

    def bag_rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        j = len(self.univalent) + index
        return (salted_rows(splitmix64(values), self.salts[j], self.sizes[j]) + self.starts[j]).unsqueeze(1)

    def config(self) -> dict[str, Any]:
        return {"method": self.method, "embedding_dim": self.embedding_dim, "rows": dict(self.rows)}
