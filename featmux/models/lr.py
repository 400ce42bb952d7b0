"""Logistic regression over the embeddings and numeric features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict
from featmux.sparse import SparseFeatures


@dataclass(frozen=True)
class LRConfig:
    """Logistic regression has no options; with embedding_dim 1 it is the classic LR on one-hot values."""


class LR(CTRModel):
    """logit = w . [flatten(emb), dense] + b.

    Args:
        embedding: any embedding layer (embedding_dim 1 gives textbook LR).
        num_dense: N numeric features.
        config: `LRConfig()`.

    Example:
        >>> model = LR(embedding, num_dense=0, config=LRConfig())
    """

    name = "lr"

    def __init__(self, embedding: FeatureEmbedding, num_dense: int, config: LRConfig | None = None) -> None:
        super().__init__(embedding, num_dense)
        self.config = config or LRConfig()
        self.linear = nn.Linear(embedding.output_dim + num_dense, 1)

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        _, x = self.flat_input(sparse, dense)
        return self.linear(x).squeeze(1)

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
