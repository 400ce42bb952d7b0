"""AutoInt+ (Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural
Networks", CIKM 2019): multi-head self-attention over the slot vectors, with residuals, plus an MLP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict
from featmux.models.layers import MLP
from featmux.sparse import SparseFeatures


class SelfAttentionLayer(nn.Module):
    """One interacting layer: multi-head self-attention across slots, a residual projection, ReLU.

    Args:
        input_dim: width of each slot's input vector.
        attention_dim: total width of the heads (the output width).
        num_heads: heads; `attention_dim` must divide by it.
        scaled: divide the logits by sqrt(head width).
        layer_norm: layer norm after the residual sum.
        dropout: dropout on the attention weights (training only).
    """

    def __init__(
        self,
        input_dim: int,
        attention_dim: int,
        num_heads: int,
        scaled: bool,
        layer_norm: bool,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim {attention_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(input_dim, 3 * attention_dim, bias=False)
        self.residual = (
            nn.Linear(input_dim, attention_dim, bias=False) if input_dim != attention_dim else None
        )
        self.scale = None if scaled else 1.0  # None: SDPA's own 1 / sqrt(head width)
        self.norm = nn.LayerNorm(attention_dim) if layer_norm else None
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, S, E] -> [B, S, A]."""
        batch, slots, _ = x.shape
        q, k, v = (
            self.qkv(x).view(batch, slots, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        )  # [B, h, S, A/h]
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, scale=self.scale
        )  # [B, h, S, A/h]
        out = out.transpose(1, 2).reshape(batch, slots, -1)  # [B, S, A]
        out = out + (self.residual(x) if self.residual is not None else x)
        if self.norm is not None:
            out = self.norm(out)
        return torch.relu(out)


@dataclass(frozen=True)
class AutoIntConfig:
    """Args:
    attention_layers: interacting (self-attention) layers.
    attention_dim: width of each layer's output (all heads together).
    num_heads: attention heads per layer.
    scaled: scale attention logits by 1 / sqrt(head width).
    layer_norm: layer norm in each interacting layer.
    hidden: widths of the MLP beside the attention (empty: AutoInt without the "+").
    dropout: MLP dropout, also on the attention weights (as FuxiCTR's `net_dropout`).
    batch_norm: batch norm in the MLP.
    """

    attention_layers: int = 3
    attention_dim: int = 64
    num_heads: int = 2
    scaled: bool = True
    layer_norm: bool = False
    hidden: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.attention_layers < 1:
            raise ValueError(f"attention_layers must be >= 1, got {self.attention_layers}")
        if self.num_heads < 1 or self.attention_dim % self.num_heads:
            raise ValueError(
                f"attention_dim ({self.attention_dim}) must be a multiple of num_heads ({self.num_heads})"
            )


class AutoInt(CTRModel):
    """AutoInt+: a linear read-out of the attended slots plus an MLP over [flatten(emb), dense].

    Numeric features enter the MLP only (self-attention runs over the embedding slots).

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features.
        config: attention stack and MLP.

    Example:
        >>> model = AutoInt(embedding, 0, AutoIntConfig(attention_layers=5, attention_dim=128, num_heads=4))
    """

    name = "autoint"

    def __init__(
        self, embedding: FeatureEmbedding, num_dense: int, config: AutoIntConfig | None = None
    ) -> None:
        super().__init__(embedding, num_dense)
        self.config = c = config or AutoIntConfig()
        dims = [embedding.embedding_dim] + [c.attention_dim] * c.attention_layers
        self.attention = nn.Sequential(
            *(
                SelfAttentionLayer(dims[i], dims[i + 1], c.num_heads, c.scaled, c.layer_norm, c.dropout)
                for i in range(c.attention_layers)
            )
        )
        self.attention_head = nn.Linear(embedding.num_slots * c.attention_dim, 1)
        self.mlp = (
            MLP(embedding.output_dim + num_dense, c.hidden, c.dropout, c.batch_norm) if c.hidden else None
        )
        self.mlp_head = nn.Linear(self.mlp.output_dim, 1) if self.mlp is not None else None

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        emb, x = self.flat_input(sparse, dense)  # [B, S, D], [B, S * D + N]
        out = self.attention_head(self.attention(emb).flatten(1)).squeeze(1)  # [B]
        if self.mlp is not None and self.mlp_head is not None:
            out = out + self.mlp_head(self.mlp(x)).squeeze(1)
        return out

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
