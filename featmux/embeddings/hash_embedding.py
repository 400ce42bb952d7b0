"""Hash embeddings (Svenstrup et al., NeurIPS 2017), CLI name `hash_embedding`.

A value v of feature f reads k rows of a pool of shared vectors, at k independent hashes, and combines
them with k importance weights of its own, themselves read from a hashed importance table:

    e(v) = sum_i p(v)_i * pool[h_i(v)]          p(v) = importance[h_p(v)]  (k weights)

Two values that collide in one pool row rarely collide in all k, and their weights tell them apart.
Layout `per_feature` (the paper's) gives each feature its own block of the pool and of the importance
table, in proportion to its cardinality; `unified` shares both by all features, salted per feature.
`solve` gives `importance_share` of the budget to the importance table and the rest to the pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from featmux.embeddings.base import INIT_STD, FeatureEmbedding, ValueEmbedding
from featmux.embeddings.budget import FP32_BYTES
from featmux.embeddings.layout import Layout, blocks, parse_layout
from featmux.embeddings.registry import BudgetTarget, EmbeddingMethod, VocabularyStats, register
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64


class HashEmbedding(ValueEmbedding):
    """k hashed rows of a shared pool per value, weighted by the value's hashed importance weights.

    Args:
        features: the categorical features.
        embedding_dim: D.
        pool: (start, size) of each feature's block of pool rows (unified: every block is the pool).
        importance: (start, size) of each feature's block of importance rows.
        hashes: k, pool rows (and weights) per value.
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> blocks = {"user": (0, 500), "ad": (0, 500)}  # unified: both features share 500 rows
        >>> HashEmbedding(features, 16, blocks, {"user": (0, 80), "ad": (0, 80)}, hashes=2)(sparse).shape
        torch.Size([B, 2, 16])
    """

    method = "hash_embedding"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        pool: Mapping[str, Sequence[int]],
        importance: Mapping[str, Sequence[int]],
        hashes: int = 2,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        if hashes < 1:
            raise ValueError(f"hashes must be >= 1, got {hashes}")
        order = [*self.univalent, *self.multivalent]
        self.pool_blocks = {f.name: (int(pool[f.name][0]), int(pool[f.name][1])) for f in self.features}
        self.importance_blocks = {
            f.name: (int(importance[f.name][0]), int(importance[f.name][1])) for f in self.features
        }
        for what, given in (("pool", self.pool_blocks), ("importance", self.importance_blocks)):
            bad = {n: b for n, b in given.items() if b[0] < 0 or b[1] < 1}
            if bad:
                raise ValueError(f"every {what} block needs a start >= 0 and at least one row, got {bad}")
        self.hashes = hashes
        pool_rows = max(s + n for s, n in self.pool_blocks.values())
        importance_rows = max(s + n for s, n in self.importance_blocks.values())
        self.pool = nn.Parameter(torch.empty(pool_rows, embedding_dim, device=device))
        self.importance = nn.Parameter(torch.empty(importance_rows, hashes, device=device))

        def buffer(name: str, values: list[Any]) -> None:
            self.register_buffer(
                name, torch.tensor(values, dtype=torch.int64, device=device), persistent=False
            )

        # salts 0..k-1 pick the pool rows, salt k the importance row
        buffer("salts", [[feature_salt(f.name, i) for i in range(hashes + 1)] for f in order])
        buffer("pool_start", [self.pool_blocks[f.name][0] for f in order])
        buffer("pool_size", [self.pool_blocks[f.name][1] for f in order])
        buffer("imp_start", [self.importance_blocks[f.name][0] for f in order])
        buffer("imp_size", [self.importance_blocks[f.name][1] for f in order])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Pool rows N(0, 0.01^2 / k) and weights N(0, 1): a value's vector starts at about N(0, 0.01^2)."""
        if self.pool.device.type == "meta":
            return
        nn.init.normal_(self.pool, std=INIT_STD / math.sqrt(self.hashes))
        nn.init.normal_(self.importance, std=1.0)

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.pool, self.importance]

    def embed(self, values: torch.Tensor, index: slice | int) -> torch.Tensor:
        k = self.hashes
        mixed = splitmix64(values)  # [N, F'] or [L]
        salts = self.salts[index]  # [F', k + 1] or [k + 1]
        rows = salted_rows(mixed.unsqueeze(-1), salts[..., :k], self.pool_size[index].unsqueeze(-1))
        rows = rows + self.pool_start[index].unsqueeze(-1)  # [..., k]
        weight_rows = salted_rows(mixed, salts[..., k], self.imp_size[index]) + self.imp_start[index]  # [...]
        vectors = F.embedding(rows, self.pool)  # [..., k, D]
        weights = F.embedding(weight_rows, self.importance)  # [..., k]
        return (weights.unsqueeze(-1) * vectors).sum(-2)  # [..., D]

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "hashes": self.hashes,
            "pool": {n: list(b) for n, b in self.pool_blocks.items()},
            "importance": {n: list(b) for n, b in self.importance_blocks.items()},
        }


@dataclass(frozen=True)
class HashEmbeddingOptions:
    """Options of the `hash_embedding` method (`embedding_options`).

    Args:
        hashes: k, pool rows per value.
        importance_share: the share of the budget spent on importance weights (0 < share < 1).
        layout: per_feature (a pool block per feature) or unified (one pool for all).

    Example:
        >>> HashEmbeddingOptions(hashes=3, layout="unified")
    """

    hashes: int = 2
    importance_share: float = 0.25
    layout: Layout = Layout.PER_FEATURE

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", parse_layout(self.layout))
        if self.hashes < 1:
            raise ValueError(f"hashes must be >= 1, got {self.hashes}")
        if not 0 < self.importance_share < 1:
            raise ValueError(f"importance_share must be in (0, 1), got {self.importance_share}")


class HashEmbeddingMethod(EmbeddingMethod):
    """`hash_embedding`: the pool and the importance table split the budget by `importance_share`."""

    name = "hash_embedding"
    options = HashEmbeddingOptions

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: HashEmbeddingOptions,
    ) -> dict[str, Any]:
        assert target is not None
        if options.layout is Layout.PER_FEATURE and not stats.known:
            raise ValueError(
                "per-feature hash embeddings split their rows by cardinality: they need a vocabulary"
            )
        k = options.hashes
        values = target.per_value(FP32_BYTES)  # the layer stores only its two float tables
        importance_rows = int(values * options.importance_share) // k
        pool_rows = (values - importance_rows * k) // embedding_dim
        least = len(features) if options.layout is Layout.PER_FEATURE else 1
        if min(importance_rows, pool_rows) < least:
            raise ValueError(
                f"a budget of {target} is too small for hash_embedding: {pool_rows} pool rows and "
                f"{importance_rows} importance rows, it needs at least {least} of each"
            )
        cards = stats.cardinalities
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "hashes": k,
            "pool": {n: list(b) for n, b in blocks(features, pool_rows, options.layout, cards).items()},
            "importance": {
                n: list(b) for n, b in blocks(features, importance_rows, options.layout, cards).items()
            },
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        return HashEmbedding(
            features,
            int(config["embedding_dim"]),
            config["pool"],
            config["importance"],
            int(config["hashes"]),
            device,
        )


register(HashEmbeddingMethod())
