"""Quotient-remainder compositional embeddings (Shi et al., KDD 2020), CLI name `qr`.

Feature f hashes value v to an index i in a virtual table of Q_f * c_f >= |V_f| + 1 rows, and reads
two small tables: row i div c_f of its quotient table (Q_f rows) and row i mod c_f of its remainder
table (c_f rows, c_f the "collision count"). Distinct indices give distinct (quotient, remainder)
pairs, so the virtual table is represented exactly in (Q_f + c_f) rows instead of Q_f * c_f. The two
rows are combined by `mult` (element-wise product), `add`, or `concat` (the two tables are D - D//2
and D//2 wide, so the slot is still D wide). A multivalent feature combines per value, then pools.

`solve` searches one collision count c for all features (as the VLDB 2024 study does): the smallest
c whose layer fits the budget. A feature whose own cheapest count c*_f (near sqrt(|V_f|)) is below c
uses c*_f instead, which shares fewer values per row and costs less. A feature whose full collisionless
table (rows and vocabulary keys) costs no more than its QR tables keeps the full table, paid from the
budget (`config()["full"]`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, unique
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featmux.embeddings.base import INIT_STD, FeatureEmbedding, ValueEmbedding
from featmux.embeddings.layout import Layout, parse_layout
from featmux.embeddings.registry import (
    BudgetTarget,
    BudgetUnit,
    EmbeddingMethod,
    VocabularyStats,
    parse_choice,
    register,
)
from featmux.embeddings.split import FullTableSplit, full_table_bytes, with_full_tables
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64


@unique
class QRCombiner(Enum):
    MULT = "mult"
    ADD = "add"
    CONCAT = "concat"


def _widths(combiner: QRCombiner, dim: int) -> tuple[int, int]:
    """Widths of the quotient and remainder tables."""
    if combiner is QRCombiner.CONCAT:
        if dim < 2:
            raise ValueError("the concat combiner needs embedding_dim >= 2")
        return dim - dim // 2, dim // 2
    return dim, dim


class QREmbedding(ValueEmbedding):
    """Quotient and remainder tables per feature; a value's vector combines one row of each.

    Args:
        features: the categorical features.
        embedding_dim: D.
        quotient_rows: Q_f per feature name, or one int: a quotient table shared by all features
            (the unified layout; the features' hashes are salted apart).
        remainder_rows: c_f per feature name (the collision count), or one int (unified layout).
        combiner: mult, add or concat.
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> q, c = {"user": 100, "ad": 30}, {"user": 100, "ad": 30}
        >>> QREmbedding(features, 16, q, c, QRCombiner.MULT)(sparse).shape  # [B, 2, 16]
    """

    method = "qr"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        quotient_rows: Mapping[str, int] | int,
        remainder_rows: Mapping[str, int] | int,
        combiner: QRCombiner = QRCombiner.MULT,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        self.shared = isinstance(quotient_rows, int) and isinstance(remainder_rows, int)
        if self.shared:
            quotient_rows = {f.name: quotient_rows for f in features}  # type: ignore[misc]
            remainder_rows = {f.name: remainder_rows for f in features}  # type: ignore[misc]
        elif isinstance(quotient_rows, int) or isinstance(remainder_rows, int):
            raise ValueError("give quotient_rows and remainder_rows both per feature, or both as one int")
        assert isinstance(quotient_rows, Mapping) and isinstance(remainder_rows, Mapping)
        missing = [f.name for f in features if f.name not in quotient_rows or f.name not in remainder_rows]
        if missing:
            raise ValueError(f"quotient_rows and remainder_rows need every feature; missing {missing}")
        self.combiner = QRCombiner(combiner)
        order = [*self.univalent, *self.multivalent]
        self.quotient_rows = {f.name: int(quotient_rows[f.name]) for f in self.features}
        self.remainder_rows = {f.name: int(remainder_rows[f.name]) for f in self.features}
        bad = {
            n: (q, self.remainder_rows[n])
            for n, q in self.quotient_rows.items()
            if min(q, self.remainder_rows[n]) < 1
        }
        if bad:
            raise ValueError(f"every feature needs at least one quotient and one remainder row, got {bad}")
        q_dim, r_dim = _widths(self.combiner, embedding_dim)
        qs = [self.quotient_rows[f.name] for f in order]
        cs = [self.remainder_rows[f.name] for f in order]
        self.quotient = nn.Parameter(torch.empty(qs[0] if self.shared else sum(qs), q_dim, device=device))
        self.remainder = nn.Parameter(torch.empty(cs[0] if self.shared else sum(cs), r_dim, device=device))

        def buffer(name: str, values: list[int]) -> None:
            self.register_buffer(
                name, torch.tensor(values, dtype=torch.int64, device=device), persistent=False
            )

        buffer("salts", [feature_salt(f.name) for f in order])
        buffer("virtual", [q * c for q, c in zip(qs, cs, strict=True)])
        buffer("collisions", cs)
        zeros = [0] * len(order)
        buffer("q_starts", zeros if self.shared else np.concatenate([[0], np.cumsum(qs)[:-1]]).tolist())
        buffer("r_starts", zeros if self.shared else np.concatenate([[0], np.cumsum(cs)[:-1]]).tolist())
        self._sparse = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialize so that a combined vector has about the spread of a plain table's N(0, 0.01^2) row."""
        if self.quotient.device.type == "meta":
            return
        if self.combiner is QRCombiner.MULT:  # the product of two N(0, s^2) has std s^2
            std = math.sqrt(INIT_STD)
            nn.init.normal_(self.quotient, std=std)
            nn.init.normal_(self.remainder, std=std)
        else:
            std = INIT_STD / math.sqrt(2) if self.combiner is QRCombiner.ADD else INIT_STD
            nn.init.normal_(self.quotient, std=std)
            nn.init.normal_(self.remainder, std=std)

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.quotient, self.remainder]

    def set_sparse_gradients(self, enabled: bool) -> None:
        self._sparse = enabled

    def embed(self, values: torch.Tensor, j: slice | int) -> torch.Tensor:
        """Values [N, F'] (features `j`, a slice) or [L] (one feature) -> combined vectors [..., D]."""
        index = salted_rows(splitmix64(values), self.salts[j], self.virtual[j])  # [...] in [0, Q * c)
        c = self.collisions[j]
        q = F.embedding(
            torch.div(index, c, rounding_mode="floor") + self.q_starts[j], self.quotient, sparse=self._sparse
        )
        r = F.embedding(torch.remainder(index, c) + self.r_starts[j], self.remainder, sparse=self._sparse)
        if self.combiner is QRCombiner.MULT:
            return q * r
        if self.combiner is QRCombiner.ADD:
            return q + r
        return torch.cat([q, r], dim=-1)

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "combiner": self.combiner.value,
            "quotient_rows": self.quotient.shape[0] if self.shared else dict(self.quotient_rows),
            "remainder_rows": self.remainder.shape[0] if self.shared else dict(self.remainder_rows),
        }


@dataclass(frozen=True)
class QROptions:
    """Options of the `qr` method (`embedding_options`).

    Args:
        combiner: how the quotient and remainder rows combine: mult, add or concat.
        full_tables: let features whose full table costs no more than their QR tables keep it
            (per-feature layout).
        layout: per_feature (tables per feature) or unified (one quotient and one remainder table
            for all features, over their summed virtual rows).

    Example:
        >>> QROptions(combiner="concat")
    """

    combiner: QRCombiner = QRCombiner.MULT
    full_tables: bool = True
    layout: Layout = Layout.PER_FEATURE

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", parse_layout(self.layout))
        object.__setattr__(self, "combiner", parse_choice(QRCombiner, self.combiner, "combiner"))


def qr_costs(
    cardinalities: np.ndarray,
    collisions: np.ndarray,
    embedding_dim: int,
    combiner: QRCombiner,
    unit: BudgetUnit,
) -> tuple[np.ndarray, np.ndarray]:
    """Cost of every feature (columns) at every collision count (rows): (QR tables, full table).

    Args:
        cardinalities: |V_f|, [F].
        collisions: candidate c values, [C] (the same for every feature) or [C, F].
        embedding_dim: D.
        combiner: sets the tables' widths.
        unit: bytes (fp32 values, int64 keys) or parameters (keys are not parameters).

    Returns:
        [C, F] costs of QR tables with Q = ceil((|V_f| + 1) / c) and c rows, and [F] of full tables.
    """
    per_value, key = BudgetTarget(0, unit).costs
    q_dim, r_dim = _widths(combiner, embedding_dim)
    rows = cardinalities.astype(np.int64) + 1  # [F]
    c = collisions.astype(np.int64)
    c = c[:, None] if c.ndim == 1 else c  # [C, 1] or [C, F]
    quotient = -(-rows[None, :] // c)  # ceil, [C, F]
    qr = (quotient * q_dim + c * r_dim) * per_value
    full = np.array(
        [full_table_bytes(int(n), embedding_dim, per_value, key) for n in cardinalities], np.int64
    )
    return qr, full


class QRMethod(EmbeddingMethod):
    """`qr`: one collision count c for all features, the smallest whose tables fit the budget."""

    name = "qr"
    options = QROptions

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: QROptions,
    ) -> dict[str, Any]:
        if not stats.known:
            raise ValueError(
                "qr sizes each feature's quotient table from its cardinality: it needs a vocabulary"
            )
        assert target is not None
        cards = np.array([stats.cardinalities[f.name] for f in features], dtype=np.int64)
        if options.layout is Layout.UNIFIED:
            return self._solve_unified(target, int((cards + 1).sum()), embedding_dim, options)
        # cost falls with c until c ~ sqrt(|V_f|), then rises; past sqrt of the largest feature no c helps
        candidates = np.arange(1, math.isqrt(int(cards.max()) + 1) + 2, dtype=np.int64)
        qr, full = qr_costs(cards, candidates, embedding_dim, options.combiner, target.unit)
        cheapest = candidates[qr.argmin(axis=0)]  # c*_f, [F]
        counts = np.minimum(candidates[:, None], cheapest[None, :])  # [C, F]: so cost falls as c grows
        qr, _ = qr_costs(cards, counts, embedding_dim, options.combiner, target.unit)
        keep_full = (full[None, :] <= qr) if options.full_tables else np.zeros_like(qr, dtype=bool)
        total = np.where(keep_full, full[None, :], qr).sum(axis=1)  # [C]
        fits = np.flatnonzero(total <= target.amount)
        if fits.size == 0:
            raise ValueError(
                f"a budget of {target} is too small for qr: its smallest layer costs {int(total.min()):,}"
            )
        best = int(fits[0])  # the smallest collision count that fits
        quotient, remainder, full_sizes = {}, {}, {}
        for f, n, c, full_row in zip(features, cards, counts[best], keep_full[best], strict=True):
            if full_row:
                full_sizes[f.name] = int(n)
            else:
                quotient[f.name] = -(-(int(n) + 1) // int(c))
                remainder[f.name] = int(c)
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "combiner": options.combiner.value,
            "quotient_rows": quotient,
            "remainder_rows": remainder,
            "full": full_sizes,
        }

    def _solve_unified(
        self, target: BudgetTarget, virtual: int, embedding_dim: int, options: QROptions
    ) -> dict[str, Any]:
        """One quotient and one remainder table over all features' `virtual` rows, smallest c that fits."""
        candidates = np.arange(1, math.isqrt(virtual) + 2, dtype=np.int64)
        cost, _ = qr_costs(np.array([virtual - 1]), candidates, embedding_dim, options.combiner, target.unit)
        fits = np.flatnonzero(cost[:, 0] <= target.amount)
        if fits.size == 0:
            raise ValueError(
                f"a budget of {target} is too small for qr: its smallest layer costs {int(cost.min()):,}"
            )
        c = int(candidates[fits[0]])
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "combiner": options.combiner.value,
            "quotient_rows": -(-virtual // c),
            "remainder_rows": c,
            "full": {},
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        def build(part: Sequence[CategoricalFeature]) -> FeatureEmbedding:
            return QREmbedding(
                part,
                int(config["embedding_dim"]),
                config["quotient_rows"],
                config["remainder_rows"],
                QRCombiner(config["combiner"]),
                device,
            )

        return with_full_tables(features, config, build, device)

    def fill(self, layer: FeatureEmbedding, vocabulary: Vocabulary, min_count: int) -> None:
        if isinstance(layer, FullTableSplit):
            layer.fill_vocabulary(vocabulary, min_count)


register(QRMethod())
