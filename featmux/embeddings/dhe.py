"""Deep hash embeddings (Kang et al., KDD 2021), CLI name `dhe`: no table, an MLP over hash codes.

A value v of feature f is encoded densely by k hashes into m buckets, each scaled to [-1, 1]
(the paper's uniform encoding; it uses k = 1024, m = 10^6), and an MLP of `hidden_layers` layers of
width h (Mish activations) maps that code to D. Layout `unified` (the default) shares one MLP by all
features, whose hashes are salted per feature; `per_feature` gives every feature its own MLP. The
hash salts derive from the feature names, so only the MLP weights are stored; `solve` picks the
largest width h that fits the budget (closed form of the MLP's size, searched over integers).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from featmux.embeddings.base import FeatureEmbedding, ValueEmbedding
from featmux.embeddings.budget import FP32_BYTES
from featmux.embeddings.layout import Layout, parse_layout
from featmux.embeddings.registry import BudgetTarget, EmbeddingMethod, VocabularyStats, register
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64


def _mlp(widths: Sequence[int], device: torch.device | None) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b, device=device) for a, b in itertools.pairwise(widths))


def mlp_parameters(hashes: int, width: int, hidden_layers: int, embedding_dim: int) -> int:
    """Weights and biases of one DHE MLP: k -> h (-> h) x (layers - 1) -> D."""
    return (
        hashes * width
        + width
        + (hidden_layers - 1) * (width * width + width)
        + width * embedding_dim
        + embedding_dim
    )


class DeepHashEmbedding(ValueEmbedding):
    """k dense hash codes per value, mapped to D by an MLP (shared, or one per feature).

    Args:
        features: the categorical features.
        embedding_dim: D.
        codes: (k, m): k hash codes per value (the MLP's input width), each of m buckets scaled to
            [-1, 1].
        widths: the hidden widths of the MLP, e.g. [h, h, h, h].
        per_feature: one MLP per feature instead of one shared by all.
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> DeepHashEmbedding(features, 16, codes=(64, 10**6), widths=[32, 32])(sparse).shape
        torch.Size([B, F, 16])
    """

    method = "dhe"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        codes: Sequence[int],
        widths: Sequence[int],
        per_feature: bool = False,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        hashes, buckets = codes
        if hashes < 1 or buckets < 2 or not widths or min(widths) < 1:
            raise ValueError(
                f"need hashes >= 1, buckets >= 2 and hidden widths >= 1, got {hashes}, {buckets}, {widths}"
            )
        order = [*self.univalent, *self.multivalent]
        self.hashes, self.buckets, self.widths = int(hashes), int(buckets), [int(w) for w in widths]
        self.per_feature = per_feature
        sizes = [self.hashes, *self.widths, embedding_dim]
        self.mlps = nn.ModuleList(_mlp(sizes, device) for _ in (order if per_feature else order[:1]))
        salts = [[feature_salt(f.name, i) for i in range(self.hashes)] for f in order]
        self.register_buffer("salts", torch.tensor(salts, dtype=torch.int64, device=device), persistent=False)

    def _codes(self, values: torch.Tensor, index: slice | int) -> torch.Tensor:
        """[..., k] dense codes in [-1, 1]."""
        buckets = salted_rows(splitmix64(values).unsqueeze(-1), self.salts[index], self.buckets)  # [..., k]
        return buckets.to(torch.float32).mul_(2.0 / (self.buckets - 1)).sub_(1.0)

    @staticmethod
    def _run(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(layers):
            x = layer(x)
            if i < len(layers) - 1:
                x = F.mish(x)
        return x

    def embed(self, values: torch.Tensor, index: slice | int) -> torch.Tensor:
        codes = self._codes(values, index)  # [N, F', k] or [L, k]
        if not self.per_feature:
            return self._run(self.mlps[0], codes)  # [..., D]
        if isinstance(index, int):
            return self._run(self.mlps[index], codes)
        positions = range(*index.indices(len(self.mlps)))
        return torch.stack([self._run(self.mlps[i], codes[:, c]) for c, i in enumerate(positions)], 1)

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "hashes": self.hashes,
            "buckets": self.buckets,
            "widths": list(self.widths),
            "layout": (Layout.PER_FEATURE if self.per_feature else Layout.UNIFIED).value,
        }


@dataclass(frozen=True)
class DeepHashOptions:
    """Options of the `dhe` method (`embedding_options`).

    Args:
        hashes: k, hash codes per value (the paper: 1024).
        buckets: m, buckets per hash (the paper: 10^6).
        hidden_layers: hidden layers of width h (the VLDB study: 4).
        layout: unified (one MLP for all features) or per_feature.

    Example:
        >>> DeepHashOptions(hashes=256, hidden_layers=2)
    """

    hashes: int = 1024
    buckets: int = 1_000_000
    hidden_layers: int = 4
    layout: Layout = Layout.UNIFIED

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", parse_layout(self.layout))
        for name in ("hashes", "hidden_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.buckets < 2:
            raise ValueError(f"buckets must be >= 2, got {self.buckets}")


class DeepHashMethod(EmbeddingMethod):
    """`dhe`: the widest MLP (or F of them) within the budget."""

    name = "dhe"
    options = DeepHashOptions

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: DeepHashOptions,
    ) -> dict[str, Any]:
        assert target is not None
        copies = len(features) if options.layout is Layout.PER_FEATURE else 1
        limit = target.per_value(FP32_BYTES)  # weights and biases are all the layer stores

        def cost(width: int) -> int:
            return copies * mlp_parameters(options.hashes, width, options.hidden_layers, embedding_dim)

        if cost(1) > limit:
            raise ValueError(
                f"a budget of {target} is too small for dhe: an MLP of width 1 has {cost(1):,} parameters"
            )
        lo, hi = 1, max(1, limit)
        while lo < hi:  # the size grows with the width
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cost(mid) <= limit else (lo, mid - 1)
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "hashes": options.hashes,
            "buckets": options.buckets,
            "widths": [lo] * options.hidden_layers,
            "layout": options.layout.value,
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        return DeepHashEmbedding(
            features,
            int(config["embedding_dim"]),
            (int(config["hashes"]), int(config["buckets"])),
            config["widths"],
            Layout(config.get("layout", "unified")) is Layout.PER_FEATURE,
            device,
        )


register(DeepHashMethod())
