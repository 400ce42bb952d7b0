"""Factorization machine (Rendle 2010) and DeepFM (Guo et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict
from featmux.models.layers import MLP, FirstOrder, fm_interaction
from featmux.sparse import SparseFeatures


@dataclass(frozen=True)
class FMConfig:
    """FM has no options beyond the embedding layer."""


class FM(CTRModel):
    """logit = first-order term + sum over slot pairs <e_i, e_j>.

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features (enter the first-order term).
        config: `FMConfig()`.

    Example:
        >>> model = FM(embedding, num_dense=13)
    """

    name = "fm"

    def __init__(self, embedding: FeatureEmbedding, num_dense: int, config: FMConfig | None = None) -> None:
        super().__init__(embedding, num_dense)
        self.config = config or FMConfig()
        self.first_order = FirstOrder(embedding.num_slots, embedding.embedding_dim, num_dense)

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(sparse)  # [B, S, D]
        return self.first_order(emb, dense) + fm_interaction(emb)

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)


@dataclass(frozen=True)
class DeepFMConfig:
    """Args:
    hidden: MLP widths.
    dropout: MLP dropout.
    batch_norm: batch norm in the MLP.
    """

    hidden: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = False


class DeepFM(CTRModel):
    """FM plus an MLP over the flattened embeddings and numeric features, sharing the embeddings.

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features.
        config: MLP shape.

    Example:
        >>> model = DeepFM(embedding, num_dense=0, config=DeepFMConfig(hidden=(400, 400, 400)))
    """

    name = "deepfm"

    def __init__(
        self, embedding: FeatureEmbedding, num_dense: int, config: DeepFMConfig | None = None
    ) -> None:
        super().__init__(embedding, num_dense)
        self.config = config or DeepFMConfig()
        self.first_order = FirstOrder(embedding.num_slots, embedding.embedding_dim, num_dense)
        self.mlp = MLP(
            embedding.output_dim + num_dense, self.config.hidden, self.config.dropout, self.config.batch_norm
        )
        self.head = nn.Linear(self.mlp.output_dim, 1)

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        emb, x = self.flat_input(sparse, dense)
        return self.first_order(emb, dense) + fm_interaction(emb) + self.head(self.mlp(x)).squeeze(1)

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
