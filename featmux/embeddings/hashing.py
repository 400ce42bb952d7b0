"""Per-feature hashing (the "hashing trick"): each feature hashes into a table of its own.

The total row budget is split across features in proportion to their vocabulary sizes and capped at
|V_f| + 1 (Coleman et al. 2023, sec. 5): no feature gets more rows than its collisionless table has,
so at budget 1 hashing has exactly the collisionless (and unified) row count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from featmux.embeddings.base import TableEmbedding
from featmux.embeddings.budget import FP32_BYTES, split_rows
from featmux.embeddings.registry import BudgetTarget, EmbeddingMethod, VocabularyStats, register
from featmux.features import CategoricalFeature, check_shares, row_owners
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64


class HashingEmbedding(TableEmbedding):
    """Feature f maps value v to row `start_f + hash_f(v) mod M_f` of its own block of M_f rows.

    A feature with `share_with` has no block: it hashes into its owner's, with the owner's salt.

    Args:
        features: the categorical features.
        embedding_dim: D.
        rows: M_f for each feature name.
        device: where to allocate.

    Example:
        >>> layer = HashingEmbedding(schema.categorical, 10, {"user": 4000, "item": 1000})
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
        check_shares(features)
        owners = row_owners(features)
        missing = [f.name for f in owners if f.name not in rows]
        if missing:
            raise ValueError(f"rows lacks feature(s) {missing}")
        bad = {f.name: rows[f.name] for f in owners if rows[f.name] < 1}
        if bad:
            raise ValueError(f"every feature needs at least one row, got {bad}")
        self.rows = {f.name: int(rows[f.name]) for f in owners}
        super().__init__(features, embedding_dim, sum(self.rows.values()), device)
        order = [*self.univalent, *self.multivalent]
        owned = row_owners(order)  # the blocks, in slot order
        block_sizes = [self.rows[f.name] for f in owned]
        block_starts = {f.name: sum(block_sizes[:i]) for i, f in enumerate(owned)}
        # a feature with share_with hashes as its owner: the owner's block, size and salt
        sizes = [self.rows[f.row_owner] for f in order]
        starts = [block_starts[f.row_owner] for f in order]
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.int64, device=device), persistent=False)
        self.register_buffer(
            "starts", torch.tensor(starts, dtype=torch.int64, device=device), persistent=False
        )
        salts = [feature_salt(f.row_owner) for f in order]
        self.register_buffer("salts", torch.tensor(salts, dtype=torch.int64, device=device), persistent=False)

    def univalent_rows(self, ids: torch.Tensor) -> torch.Tensor:
        n = len(self.univalent)
        return salted_rows(splitmix64(ids), self.salts[:n], self.sizes[:n]).add_(self.starts[:n])  # [B, F_u]

    def bag_rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        j = len(self.univalent) + index
        return (salted_rows(splitmix64(values), self.salts[j], self.sizes[j]) + self.starts[j]).unsqueeze(1)

    def config(self) -> dict[str, Any]:
        return {"method": self.method, "embedding_dim": self.embedding_dim, "rows": dict(self.rows)}


class HashingMethod(EmbeddingMethod):
    """`hashing`: per-feature tables whose rows split the budget in proportion to cardinality."""

    name = "hashing"
    shares_rows = True
    above_full_note = "per-feature hashing caps each feature at its vocabulary, so the excess is not used"

    def check_budget(self, budget: Any) -> None:
        if (budget.fraction or 0) > 1:
            raise ValueError(
                f"budget {budget} is larger than the collisionless size: per-feature hashing caps every "
                "feature at its vocabulary, so the excess could not be used; give a budget of at most 1"
            )

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: Any,
    ) -> dict[str, Any]:
        if not stats.known:
            raise ValueError("per-feature hashing splits its rows by vocabulary size: it needs a vocabulary")
        assert target is not None
        # the layer stores only its table (the salts and block bounds are recomputed from the config)
        rows = target.per_value(FP32_BYTES) // embedding_dim
        if rows < len(row_owners(features)):
            raise ValueError(
                f"a budget of {target} is too small: {rows} rows of width {embedding_dim}; per-feature "
                f"hashing needs at least one row for each of the {len(row_owners(features))} features "
                "with rows of their own"
            )
        owners = row_owners(features)
        caps = [stats.cardinalities[f.name] + 1 for f in owners]
        alloc = split_rows(rows, caps)
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "rows": {f.name: a for f, a in zip(owners, alloc, strict=True)},
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> HashingEmbedding:
        return HashingEmbedding(features, int(config["embedding_dim"]), config["rows"], device)


register(HashingMethod())
