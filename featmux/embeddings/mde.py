"""Mixed-dimension embeddings (Ginart et al., ISIT 2021), CLI name `mde`.

Feature f gets a table of width d_f = clamp(round(D * (n_f / n_min)^-alpha), 1, D), n_f its
cardinality and n_min the smallest one: small vocabularies keep the full width D, large ones get
narrow rows, and a learned projection [d_f, D] brings every row back to D (none where d_f = D).
Rows are hashed, |V_f| + 1 per feature (per-feature hashing's size at budget 1), so no vocabulary keys
are stored; `solve` binary-searches the smallest alpha whose layer fits the budget. Layout `unified`
keeps one table per width instead, shared by the features of that width (their |V_f| + 1 rows summed,
hashes salted per feature, as in Unified Embedding), with one projection per width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from featmux.embeddings.base import INIT_STD, FeatureEmbedding, ValueEmbedding
from featmux.embeddings.budget import FP32_BYTES
from featmux.embeddings.layout import Layout, parse_layout
from featmux.embeddings.registry import BudgetTarget, EmbeddingMethod, VocabularyStats, register
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64


class MixedDimEmbedding(ValueEmbedding):
    """Hashed tables of width d_f, projected to D: one per feature, or one per width (unified layout).

    Args:
        features: the categorical features.
        embedding_dim: D.
        rows: table rows per feature name (unified: a width's table has its features' rows summed).
        dims: d_f per feature name (1 to D).
        layout: per_feature (a table and a projection per feature) or unified (the features of one
            width share one table and one projection, their hashes salted apart).
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> MixedDimEmbedding(features, 16, {"user": 5001, "ad": 31}, {"user": 4, "ad": 16})(sparse).shape
        torch.Size([B, 2, 16])
    """

    method = "mde"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        rows: Mapping[str, int],
        dims: Mapping[str, int],
        layout: Layout | str = Layout.PER_FEATURE,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        order = [*self.univalent, *self.multivalent]
        self.layout = parse_layout(layout)
        self.rows = {f.name: int(rows[f.name]) for f in self.features}
        self.dims = {f.name: int(dims[f.name]) for f in self.features}
        bad = {
            n: (self.rows[n], d)
            for n, d in self.dims.items()
            if self.rows[n] < 1 or not 1 <= d <= embedding_dim
        }
        if bad:
            raise ValueError(f"rows must be >= 1 and dims in [1, {embedding_dim}], got {bad}")
        widths = [self.dims[f.name] for f in order]
        if self.layout is Layout.UNIFIED:  # one group per width, widest first
            group_widths = sorted(set(widths), reverse=True)
            self._group = [group_widths.index(d) for d in widths]
        else:  # one group per feature, in slot order (the state_dict keys of per-feature layers)
            group_widths, self._group = widths, list(range(len(order)))
        group_rows = [0] * len(group_widths)
        for f, g in zip(order, self._group, strict=True):
            group_rows[g] += self.rows[f.name]
        self.tables = nn.ParameterList(
            [
                nn.Parameter(torch.empty(n, d, device=device))
                for n, d in zip(group_rows, group_widths, strict=True)
            ]
        )
        # a group at full width needs no projection; the others' are keyed by group position
        self.projections = nn.ParameterDict(
            {
                str(g): nn.Parameter(torch.empty(d, embedding_dim, device=device))
                for g, d in enumerate(group_widths)
                if d < embedding_dim
            }
        )
        self.register_buffer(
            "salts",
            torch.tensor([feature_salt(f.name) for f in order], dtype=torch.int64, device=device),
            persistent=False,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Rows N(0, 0.01^2); projections N(0, 1/d_f), so projected rows keep about that spread."""
        if self.tables[0].device.type == "meta":
            return
        for table in self.tables:
            nn.init.normal_(table, std=INIT_STD)
        for key, projection in self.projections.items():
            nn.init.normal_(projection, std=self.tables[int(key)].shape[1] ** -0.5)

    def table_parameters(self) -> list[nn.Parameter]:
        return list(self.tables)

    def _one(self, slot: int, values: torch.Tensor) -> torch.Tensor:
        """Vectors of one feature's values: [...] -> [..., D], from its group's table and projection."""
        group = self._group[slot]
        table = self.tables[group]
        vectors = table[salted_rows(splitmix64(values), self.salts[slot], table.shape[0])]  # [..., d]
        key = str(group)
        return vectors @ self.projections[key] if key in self.projections else vectors  # [..., D]

    def embed(self, values: torch.Tensor, index: slice | int) -> torch.Tensor:
        if isinstance(index, int):
            return self._one(index, values)
        # one lookup per feature: widths differ, so a loop over F (never over rows)
        return torch.stack(
            [self._one(i, values[:, c]) for c, i in enumerate(range(*index.indices(len(self._group))))], 1
        )

    def config(self) -> dict[str, Any]:
        config = {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "rows": dict(self.rows),
            "dims": dict(self.dims),
        }
        if self.layout is Layout.UNIFIED:  # per-feature configs stay as they were before layouts
            config["layout"] = self.layout.value
        return config


def mixed_dims(cardinalities: np.ndarray, embedding_dim: int, alpha: float) -> np.ndarray:
    """d_f = clamp(round(D * (n_f / n_min)^-alpha), 1, D) for every feature."""
    n = np.maximum(cardinalities, 1).astype(np.float64)
    return np.clip(np.rint(embedding_dim * (n / n.min()) ** -alpha), 1, embedding_dim).astype(np.int64)


def mde_floats(
    cardinalities: np.ndarray, dims: np.ndarray, embedding_dim: int, layout: Layout = Layout.PER_FEATURE
) -> int:
    """Floats stored: (n_f + 1) d_f rows plus a [d_f, D] projection per feature (unified: per width)
    where d_f < D."""
    rows = (cardinalities.astype(np.int64) + 1) * dims
    narrow = dims[dims < embedding_dim]
    if layout is Layout.UNIFIED:
        narrow = np.unique(narrow)
    return int(rows.sum() + (narrow * embedding_dim).sum())


@dataclass(frozen=True)
class MixedDimOptions:
    """Options of the `mde` method (`embedding_options`).

    Args:
        alpha: the power-law exponent; None lets `solve` find the smallest one that fits the budget.
        layout: per_feature (a table per feature) or unified (one table and one projection per width,
            shared by the features of that width, salted apart).

    Example:
        >>> MixedDimOptions(alpha=0.3, layout="unified")
    """

    alpha: float | None = None
    layout: Layout = Layout.PER_FEATURE

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", parse_layout(self.layout))
        if self.alpha is not None and self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")


class MixedDimMethod(EmbeddingMethod):
    """`mde`: binary search of alpha in [0, 16] (the dims only shrink as alpha grows)."""

    name = "mde"
    options = MixedDimOptions

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: MixedDimOptions,
    ) -> dict[str, Any]:
        if not stats.known:
            raise ValueError("mde sizes each feature from its cardinality: it needs a vocabulary")
        assert target is not None
        cards = np.array([stats.cardinalities[f.name] for f in features], dtype=np.int64)
        limit = target.per_value(FP32_BYTES)

        def floats(alpha: float) -> int:
            return mde_floats(cards, mixed_dims(cards, embedding_dim, alpha), embedding_dim, options.layout)

        def fits(alpha: float) -> bool:
            return floats(alpha) <= limit

        if options.alpha is not None:
            alpha = options.alpha
        else:
            lo, hi = 0.0, 16.0
            if not fits(hi):
                least = floats(hi)
                raise ValueError(
                    f"a budget of {target} is too small for mde: one column per row costs {least:,} floats"
                )
            if fits(lo):
                hi = lo
            for _ in range(40):  # to ~1e-11: far below the step at which a rounded dim changes
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if fits(mid) else (mid, hi)
            alpha = hi
        dims = mixed_dims(cards, embedding_dim, alpha)
        if floats(alpha) > limit:
            raise ValueError(f"a budget of {target} is too small for mde at alpha {alpha}")
        config = {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "rows": {f.name: int(n) + 1 for f, n in zip(features, cards, strict=True)},
            "dims": {f.name: int(d) for f, d in zip(features, dims, strict=True)},
            "alpha": alpha,
        }
        if options.layout is Layout.UNIFIED:
            config["layout"] = options.layout.value
        return config

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        return MixedDimEmbedding(
            features,
            int(config["embedding_dim"]),
            config["rows"],
            config["dims"],
            Layout(config.get("layout", Layout.PER_FEATURE.value)),
            device,
        )


register(MixedDimMethod())
