"""DCN v1 (Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict
from featmux.models.layers import MLP
from featmux.sparse import SparseFeatures


class CrossNetV1(nn.Module):
    """DCN v1 cross layers: x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l, one weight vector w_l per layer.

    Args:
        dim: width H of x_0.
        num_layers: number of cross layers.
    """

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.weight = nn.Parameter(torch.empty(num_layers, dim))
        self.bias = nn.Parameter(torch.zeros(num_layers, dim))
        bound = dim**-0.5  # as nn.Linear(H, 1) initializes each w_l
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 [B, H] -> [B, H]."""
        x = x0
        for w, b in zip(self.weight, self.bias, strict=True):
            x = x0 * (x @ w).unsqueeze(1) + b + x  # (x @ w): [B], a scalar per row
        return x


@dataclass(frozen=True)
class DCNConfig:
    """Args:
    cross_layers: number of cross layers.
    hidden: MLP widths (empty: cross network only).
    dropout: MLP dropout.
    batch_norm: batch norm in the MLP.
    """

    cross_layers: int = 3
    hidden: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = False


class DCN(CTRModel):
    """Cross network v1 and an MLP side by side over x_0 = [flatten(emb), dense], outputs concatenated.

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features.
        config: cross layers and MLP.

    Example:
        >>> model = DCN(embedding, num_dense=0, config=DCNConfig(cross_layers=3, dropout=0.2))
    """

    name = "dcn"

    def __init__(self, embedding: FeatureEmbedding, num_dense: int, config: DCNConfig | None = None) -> None:
        super().__init__(embedding, num_dense)
        self.config = c = config or DCNConfig()
        width = embedding.output_dim + num_dense
        self.cross = CrossNetV1(width, c.cross_layers)
        self.mlp = MLP(width, c.hidden, c.dropout, c.batch_norm) if c.hidden else None
        self.head = nn.Linear(width + (self.mlp.output_dim if self.mlp is not None else 0), 1)

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        _, x0 = self.flat_input(sparse, dense)  # [B, H]
        out = self.cross(x0)  # [B, H]
        if self.mlp is not None:
            out = torch.cat([out, self.mlp(x0)], dim=1)  # [B, H + hidden[-1]]
        return self.head(out).squeeze(1)

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
