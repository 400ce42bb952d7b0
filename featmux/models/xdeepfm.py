"""xDeepFM (Lian et al., "xDeepFM: Combining Explicit and Implicit Feature Interactions", KDD 2018).

logit = first-order term + CIN (compressed interaction network) + MLP, over the same embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict
from featmux.models.layers import MLP, FirstOrder
from featmux.sparse import SparseFeatures


class CIN(nn.Module):
    """Compressed interaction network: X^k_h = sum_{i, j} W^{k, h}_{i, j} (X^{k-1}_i * X^0_j), vector-wise.

    Each layer's feature maps are sum-pooled over D; the pooled maps of all layers are the output.

    Args:
        num_slots: S, the vectors of X^0.
        layer_sizes: H_k, feature maps of each layer.
    """

    def __init__(self, num_slots: int, layer_sizes: Sequence[int]) -> None:
        super().__init__()
        if not layer_sizes or min(layer_sizes) < 1:
            raise ValueError(f"CIN needs at least one layer of >= 1 maps, got {list(layer_sizes)}")
        widths = [num_slots, *layer_sizes]
        # a 1x1 convolution over the H_{k-1} * S outer-product channels is W^k applied at every d
        self.layers = nn.ModuleList(
            nn.Conv1d(widths[k] * num_slots, widths[k + 1], kernel_size=1) for k in range(len(layer_sizes))
        )
        self.output_dim = sum(layer_sizes)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 [B, S, D] -> pooled maps [B, sum H_k]."""
        batch, _, dim = x0.shape
        x, pooled = x0, []
        for conv in self.layers:
            z = torch.einsum("bhd,bsd->bhsd", x, x0).reshape(batch, -1, dim)  # [B, H_{k-1} * S, D]
            x = conv(z)  # [B, H_k, D]; linear maps, as in the paper and FuxiCTR
            pooled.append(x.sum(dim=2))  # [B, H_k]
        return torch.cat(pooled, dim=1)


@dataclass(frozen=True)
class XDeepFMConfig:
    """Args:
    cin: feature maps of each CIN layer.
    hidden: MLP widths (empty: no MLP).
    dropout: MLP dropout.
    batch_norm: batch norm in the MLP.
    """

    cin: tuple[int, ...] = (64,)
    hidden: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = False


class XDeepFM(CTRModel):
    """First-order term + CIN over the slot vectors + MLP over [flatten(emb), dense].

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features (first-order term and MLP).
        config: CIN and MLP shapes.

    Example:
        >>> model = XDeepFM(embedding, num_dense=0, config=XDeepFMConfig(cin=(64,), dropout=0.2))
    """

    name = "xdeepfm"

    def __init__(
        self, embedding: FeatureEmbedding, num_dense: int, config: XDeepFMConfig | None = None
    ) -> None:
        super().__init__(embedding, num_dense)
        self.config = c = config or XDeepFMConfig()
        self.first_order = FirstOrder(embedding.num_slots, embedding.embedding_dim, num_dense)
        self.cin = CIN(embedding.num_slots, c.cin)
        self.cin_head = nn.Linear(self.cin.output_dim, 1)
        self.mlp = (
            MLP(embedding.output_dim + num_dense, c.hidden, c.dropout, c.batch_norm) if c.hidden else None
        )
        self.mlp_head = nn.Linear(self.mlp.output_dim, 1) if self.mlp is not None else None

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        emb, x = self.flat_input(sparse, dense)  # [B, S, D], [B, S * D + N]
        out = self.first_order(emb, dense) + self.cin_head(self.cin(emb)).squeeze(1)
        if self.mlp is not None and self.mlp_head is not None:
            out = out + self.mlp_head(self.mlp(x)).squeeze(1)
        return out

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
