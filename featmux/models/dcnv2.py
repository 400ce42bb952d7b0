"""DCN-v2 (Wang et al., "DCN V2: Improved Deep & Cross Network", WWW 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, unique
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict
from featmux.models.layers import MLP, CrossNetwork, to_autocast_dtype
from featmux.sparse import SparseFeatures


@unique
class DCNStructure(Enum):
    STACKED = "stacked"  # MLP on top of the cross network
    PARALLEL = "parallel"  # cross network and MLP side by side, outputs concatenated
    CROSS_ONLY = "cross_only"


@dataclass(frozen=True)
class DCNv2Config:
    """Args:
    cross_layers: number of cross layers.
    low_rank: rank of each cross layer's W (None: full rank).
    structure: stacked, parallel or cross_only.
    hidden: MLP widths.
    dropout: MLP dropout.
    batch_norm: batch norm in the MLP.
    """

    cross_layers: int = 3
    low_rank: int | None = None
    structure: DCNStructure = DCNStructure.PARALLEL
    hidden: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "structure", DCNStructure(self.structure))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.structure is not DCNStructure.CROSS_ONLY and not self.hidden:
            raise ValueError(f"structure {self.structure.value!r} needs at least one hidden layer")


class DCNv2(CTRModel):
    """Cross network over x_0 = [flatten(emb), dense], stacked or in parallel with an MLP.

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features.
        config: cross layers, structure and MLP.

    Example:
        >>> model = DCNv2(embedding, num_dense=13, config=DCNv2Config(cross_layers=2, structure="stacked"))
    """

    name = "dcnv2"

    def __init__(
        self, embedding: FeatureEmbedding, num_dense: int, config: DCNv2Config | None = None
    ) -> None:
        super().__init__(embedding, num_dense)
        self.config = c = config or DCNv2Config()
        width = embedding.output_dim + num_dense
        self.cross = CrossNetwork(width, c.cross_layers, c.low_rank)
        self.mlp = None
        if c.structure is DCNStructure.CROSS_ONLY:
            head_in = width
        else:
            self.mlp = MLP(width, c.hidden, c.dropout, c.batch_norm)
            head_in = self.mlp.output_dim + (width if c.structure is DCNStructure.PARALLEL else 0)
        self.head = nn.Linear(head_in, 1)

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        _, x0 = self.flat_input(sparse, dense)  # [B, H]
        x0 = to_autocast_dtype(x0)  # under bf16 autocast the cross layers then run in bf16 throughout
        crossed = self.cross(x0)  # [B, H]
        if self.mlp is None:
            out = crossed
        elif self.config.structure is DCNStructure.STACKED:
            out = self.mlp(crossed)
        else:
            out = torch.cat([crossed, self.mlp(x0)], dim=1)
        return self.head(out).squeeze(1)

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
