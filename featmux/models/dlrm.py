"""DLRM (Naumov et al. 2019): bottom MLP for numeric features, pairwise dot interaction, top MLP.

With `interaction: cat` the vectors are concatenated instead (FuxiCTR's option, BARS' best on Frappe).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, unique
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict
from featmux.models.layers import MLP
from featmux.sparse import SparseFeatures


@unique
class DLRMInteraction(Enum):
    DOT = "dot"  # pairwise dot products of the vectors (the DLRM paper)
    CAT = "cat"  # the vectors concatenated (BARS' best DLRM run on Frappe)


@dataclass(frozen=True)
class DLRMConfig:
    """Args:
    bottom: hidden widths of the bottom MLP (its last layer projects the numeric features to D).
    top: hidden widths of the top MLP.
    interaction: dot (pairwise dot products) or cat (concatenation) of the vectors.
    dropout: dropout of the top MLP.
    """

    bottom: tuple[int, ...] = (64,)
    top: tuple[int, ...] = (256, 128)
    interaction: DLRMInteraction = DLRMInteraction.DOT
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "interaction", DLRMInteraction(self.interaction))


class DLRM(CTRModel):
    """Dot products between every pair of {slot vectors, projected numeric vector}, then a top MLP.

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features (0: no bottom MLP).
        config: MLP widths.

    Example:
        >>> model = DLRM(embedding, num_dense=13, config=DLRMConfig(bottom=(64,), top=(256, 128)))
    """

    name = "dlrm"

    def __init__(self, embedding: FeatureEmbedding, num_dense: int, config: DLRMConfig | None = None) -> None:
        super().__init__(embedding, num_dense)
        self.config = c = config or DLRMConfig()
        dim = embedding.embedding_dim
        self.bottom = None
        if num_dense:
            self.bottom = nn.Sequential(
                MLP(num_dense, c.bottom), nn.Linear(c.bottom[-1] if c.bottom else num_dense, dim)
            )
        vectors = embedding.num_slots + (1 if num_dense else 0)
        rows, cols = torch.triu_indices(vectors, vectors, offset=1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)
        interactions = rows.numel() if c.interaction is DLRMInteraction.DOT else vectors * dim
        self.top = MLP(interactions + (dim if num_dense else 0), c.top, c.dropout)
        self.head = nn.Linear(self.top.output_dim, 1)

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(sparse)  # [B, S, D]
        parts = []
        if self.bottom is not None:
            projected = self.bottom(dense)  # [B, D]
            emb = torch.cat([projected.unsqueeze(1), emb], dim=1)  # [B, S + 1, D]
            parts.append(projected)
        if self.config.interaction is DLRMInteraction.CAT:
            parts.append(emb.flatten(1))  # [B, V * D]
        else:
            gram = torch.bmm(emb, emb.transpose(1, 2))  # [B, V, V]
            parts.append(gram[:, self.pair_rows, self.pair_cols])  # [B, V (V - 1) / 2]
        return self.head(self.top(torch.cat(parts, dim=1))).squeeze(1)

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
