"""TT-Rec: tensor-train factorized tables (Yin et al., MLSys 2021), CLI name `tt`, on CPU.

Feature f hashes a value to a row i of a virtual table of n1 * n2 * n3 >= |V_f| + 1 rows and width
D = d1 * d2 * d3. Row i = (i1, i2, i3) in mixed radix is the contraction of three cores,

    row(i) = G1[i1] (d1 x r)  .  G2[i2] (r x d2 x r)  .  G3[i3] (r x d3)   ->  d1 x d2 x d3 = D,

so the feature stores (n1 d1 + n2 d2 r + n3 d3) r floats instead of n1 n2 n3 D. Every feature has
the same D factors and rank r, so the cores of all features sit in three flat tables and one batched
einsum contracts them (no loop over features). `solve` takes the largest rank r that fits the budget;
a feature whose full collisionless table costs no more than its cores at rank 1 keeps the full table.
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
from featmux.embeddings.layout import Layout, parse_layout
from featmux.embeddings.registry import BudgetTarget, EmbeddingMethod, VocabularyStats, register
from featmux.embeddings.split import FullTableSplit, full_table_bytes, with_full_tables
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64


def dim_factors(embedding_dim: int) -> tuple[int, int, int]:
    """d1 <= d2 <= d3 with d1 d2 d3 = D, as balanced as D's divisors allow (largest d1, then d2)."""
    best = (1, 1, embedding_dim)
    for d1 in range(1, round(embedding_dim ** (1 / 3)) + 2):
        if embedding_dim % d1:
            continue
        rest = embedding_dim // d1
        for d2 in range(d1, math.isqrt(rest) + 1):
            if rest % d2 == 0:
                best = max(best, (d1, d2, rest // d2), key=lambda t: (t[0], t[1]))
    return best


def row_factors(rows: int) -> tuple[int, int, int]:
    """n1, n2, n3 near rows^(1/3) with n1 n2 n3 >= rows."""
    n1 = max(1, math.ceil(rows ** (1 / 3)))
    n2 = max(1, math.ceil(math.sqrt(rows / n1)))
    return n1, n2, max(1, math.ceil(rows / (n1 * n2)))


def tt_floats(rows: int, embedding_dim: int, rank: int) -> int:
    """Floats of one feature's three cores at rank r."""
    (n1, n2, n3), (d1, d2, d3) = row_factors(rows), dim_factors(embedding_dim)
    return (n1 * d1 + n2 * d2 * rank + n3 * d3) * rank


class TTEmbedding(ValueEmbedding):
    """Three tensor-train cores per feature; a row is their contraction at the value's hashed index.

    Args:
        features: the categorical features.
        embedding_dim: D (factored as d1 d2 d3 by `dim_factors`).
        rows: virtual rows per feature (each is factored as n1 n2 n3 >= rows by `row_factors`), or one
            int: one set of cores shared by all features (the unified layout, hashes salted apart).
        rank: r, the TT rank shared by all features.
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> TTEmbedding(features, 16, {"user": 100_001, "ad": 5_001}, rank=8)(sparse).shape
        torch.Size([B, 2, 16])
    """

    method = "tt"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        rows: Mapping[str, int] | int,
        rank: int,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        order = [*self.univalent, *self.multivalent]
        self.shared = isinstance(rows, int)
        self.rows = {f.name: int(rows if isinstance(rows, int) else rows[f.name]) for f in self.features}
        if min(self.rows.values()) < 1:
            raise ValueError(f"every feature needs at least one row, got {self.rows}")
        self.rank = rank
        self.dims = dim_factors(embedding_dim)
        d1, d2, d3 = self.dims
        factors = [row_factors(self.rows[f.name]) for f in order]  # [(n1, n2, n3)] per slot
        stored = factors[:1] if self.shared else factors  # unified: every feature reads the same cores
        self.core1 = nn.Parameter(torch.empty(sum(n[0] for n in stored), d1 * rank, device=device))
        self.core2 = nn.Parameter(torch.empty(sum(n[1] for n in stored), rank * d2 * rank, device=device))
        self.core3 = nn.Parameter(torch.empty(sum(n[2] for n in stored), rank * d3, device=device))

        def buffer(name: str, values: list[Any]) -> None:
            self.register_buffer(
                name, torch.tensor(values, dtype=torch.int64, device=device), persistent=False
            )

        buffer("salts", [feature_salt(f.name) for f in order])
        buffer("factors", factors)  # [F, 3]
        starts = [
            [0 if self.shared else sum(n[k] for n in factors[:j]) for k in range(3)]
            for j in range(len(factors))
        ]
        buffer("starts", starts)  # [F, 3], each feature's first row in each core table
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Cores N(0, s^2) with r^2 s^6 = 0.01^2, so a contracted entry has about a plain row's spread."""
        if self.core1.device.type == "meta":
            return
        std = (INIT_STD / self.rank) ** (1 / 3)
        for core in (self.core1, self.core2, self.core3):
            nn.init.normal_(core, std=std)

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.core1, self.core2, self.core3]

    def embed(self, values: torch.Tensor, index: slice | int) -> torch.Tensor:
        n = self.factors[index]  # [F', 3] or [3]
        index_rows = salted_rows(splitmix64(values), self.salts[index], n[..., 0] * n[..., 1] * n[..., 2])
        i1 = torch.div(index_rows, n[..., 1] * n[..., 2], rounding_mode="floor")
        i2 = torch.remainder(torch.div(index_rows, n[..., 2], rounding_mode="floor"), n[..., 1])
        i3 = torch.remainder(index_rows, n[..., 2])
        start = self.starts[index]
        r, (d1, d2, d3) = self.rank, self.dims
        a = F.embedding(i1 + start[..., 0], self.core1).unflatten(-1, (d1, r))  # [..., d1, r]
        b = F.embedding(i2 + start[..., 1], self.core2).unflatten(-1, (r, d2, r))  # [..., r, d2, r]
        c = F.embedding(i3 + start[..., 2], self.core3).unflatten(-1, (r, d3))  # [..., r, d3]
        ab = torch.einsum("...ar,...rbs->...abs", a, b)  # [..., d1, d2, r]
        return torch.einsum("...abs,...sc->...abc", ab, c).flatten(-3)  # [..., D]

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "rows": next(iter(self.rows.values())) if self.shared else dict(self.rows),
            "rank": self.rank,
        }


@dataclass(frozen=True)
class TTOptions:
    """Options of the `tt` method (`embedding_options`).

    Args:
        full_tables: let features whose full table costs no more than their rank-1 cores keep it
            (per-feature layout).
        layout: per_feature (cores per feature) or unified (one set of cores over all features'
            summed virtual rows).

    Example:
        >>> TTOptions(full_tables=False)
    """

    full_tables: bool = True
    layout: Layout = Layout.PER_FEATURE

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", parse_layout(self.layout))


class TTMethod(EmbeddingMethod):
    """`tt`: the largest rank whose cores (and the small features' full tables) fit the budget."""

    name = "tt"
    options = TTOptions

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: TTOptions,
    ) -> dict[str, Any]:
        if not stats.known:
            raise ValueError("tt sizes each feature's cores from its cardinality: it needs a vocabulary")
        assert target is not None
        per_value, key = target.costs
        cards = {f.name: stats.cardinalities[f.name] for f in features}
        if options.layout is Layout.UNIFIED:
            virtual = sum(c + 1 for c in cards.values())
            cards = {"*": virtual - 1}  # one set of cores for all the features' virtual rows
        full = {
            n: c
            for n, c in cards.items()
            if options.full_tables
            and options.layout is Layout.PER_FEATURE
            and full_table_bytes(c, embedding_dim, per_value, key)
            <= tt_floats(c + 1, embedding_dim, 1) * per_value
        }
        paid = sum(full_table_bytes(c, embedding_dim, per_value, key) for c in full.values())
        rest = {n: c + 1 for n, c in cards.items() if n not in full}

        def cost(rank: int) -> int:
            return paid + per_value * sum(tt_floats(m, embedding_dim, rank) for m in rest.values())

        if cost(1) > target.amount:
            raise ValueError(f"a budget of {target} is too small for tt: rank 1 costs {cost(1):,}")
        lo, hi = 1, max(1, embedding_dim * 64)
        while lo < hi:  # the cores grow with the rank
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cost(mid) <= target.amount else (lo, mid - 1)
        rows: dict[str, int] | int = rest["*"] if options.layout is Layout.UNIFIED else rest
        return {"method": self.name, "embedding_dim": embedding_dim, "rows": rows, "rank": lo, "full": full}

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        def build(part: Sequence[CategoricalFeature]) -> FeatureEmbedding:
            return TTEmbedding(
                part, int(config["embedding_dim"]), config["rows"], int(config["rank"]), device
            )

        return with_full_tables(features, config, build, device)

    def fill(self, layer: FeatureEmbedding, vocabulary: Vocabulary, min_count: int) -> None:
        if isinstance(layer, FullTableSplit):
            layer.fill_vocabulary(vocabulary, min_count)


register(TTMethod())
