"""Wide & Deep (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict
from featmux.models.fm import DeepFMConfig
from featmux.models.layers import MLP, FirstOrder
from featmux.sparse import SparseFeatures


@dataclass(frozen=True)
class WDLConfig(DeepFMConfig):
    """Args:
    hidden: widths of the deep part's MLP.
    dropout: MLP dropout.
    batch_norm: batch norm in the MLP.
    """


class WDL(CTRModel):
    """logit = wide (first-order) term + MLP over the flattened embeddings and numeric features.

    The wide part is `FirstOrder`: a value's weight is a projection of its embedding row, so the wide
    part spends no parameters of its own on the tables (one budget for every method).

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features (enter both parts).
        config: the deep part's MLP.

    Example:
        >>> model = WDL(embedding, num_dense=0, config=WDLConfig(hidden=(400, 400, 400), dropout=0.2))
    """

    name = "wdl"

    def __init__(self, embedding: FeatureEmbedding, num_dense: int, config: WDLConfig | None = None) -> None:
        super().__init__(embedding, num_dense)
        self.config = c = config or WDLConfig()
        self.wide = FirstOrder(embedding.num_slots, embedding.embedding_dim, num_dense)
        self.deep = MLP(embedding.output_dim + num_dense, c.hidden, c.dropout, c.batch_norm)
        self.head = nn.Linear(self.deep.output_dim, 1)

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        emb, x = self.flat_input(sparse, dense)  # [B, S, D], [B, S * D + N]
        return self.wide(emb, dense) + self.head(self.deep(x)).squeeze(1)

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
