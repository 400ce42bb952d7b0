"""FinalMLP (Mao et al., "FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction", AAAI 2023).

Two MLP streams over the same embeddings, each gated by its own feature-selection network, fused by a
multi-head bilinear aggregation: logit = w_1^T o_1 + w_2^T o_2 + sum_h o_{1,h}^T W_h o_{2,h} + b.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict, slots_of
from featmux.models.layers import MLP
from featmux.sparse import SparseFeatures


class FeatureSelection(nn.Module):
    """A gate in (0, 2) per input unit, computed from the vectors of some context slots.

    With no context slots the gate's input is a learned bias vector (the same gate for every row).

    Args:
        context_slots: slot indices whose vectors (flattened) feed the gate; empty: a learned bias.
        embedding_dim: D.
        hidden: hidden widths of the gate MLP.
        output_dim: width of the gated input.
    """

    def __init__(
        self, context_slots: Sequence[int], embedding_dim: int, hidden: Sequence[int], output_dim: int
    ) -> None:
        super().__init__()
        self.register_buffer(
            "context", torch.tensor(list(context_slots), dtype=torch.int64), persistent=False
        )
        self.bias = None if context_slots else nn.Parameter(torch.zeros(1, embedding_dim))
        gate_in = embedding_dim * max(1, len(context_slots))
        mlp = MLP(gate_in, hidden)
        self.gate = nn.Sequential(mlp, nn.Linear(mlp.output_dim, output_dim), nn.Sigmoid())

    def forward(self, emb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """emb [B, S, D], x [B, H] -> gated x [B, H]."""
        if self.bias is not None:
            ctx = self.bias.expand(x.shape[0], -1)  # [B, D]
        else:
            ctx = emb.index_select(1, self.context).flatten(1)  # [B, C * D]
        return x * (2.0 * self.gate(ctx))


class BilinearFusion(nn.Module):
    """Multi-head bilinear fusion of two vectors into one logit.

    Args:
        x_dim: width of the first stream's output.
        y_dim: width of the second stream's output.
        num_heads: heads; both widths must divide by it.
    """

    def __init__(self, x_dim: int, y_dim: int, num_heads: int) -> None:
        super().__init__()
        if num_heads < 1 or x_dim % num_heads or y_dim % num_heads:
            raise ValueError(
                f"stream widths {x_dim} and {y_dim} must both be multiples of num_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.w_x = nn.Linear(x_dim, 1)
        self.w_y = nn.Linear(y_dim, 1, bias=False)
        self.w_xy = nn.Parameter(torch.empty(num_heads, x_dim // num_heads, y_dim // num_heads))
        # Xavier-normal as for a [h * X/h * Y/h, 1] matrix (FuxiCTR's InteractionAggregation)
        nn.init.normal_(self.w_xy, std=(2.0 / (self.w_xy.numel() + 1)) ** 0.5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x [B, X], y [B, Y] -> logits [B]."""
        hx = x.view(x.shape[0], self.num_heads, -1)  # [B, h, X/h]
        hy = y.view(y.shape[0], self.num_heads, -1)  # [B, h, Y/h]
        bilinear = torch.einsum("bhi,hij,bhj->b", hx, self.w_xy, hy)
        return self.w_x(x).squeeze(1) + self.w_y(y).squeeze(1) + bilinear


@dataclass(frozen=True)
class FinalMLPConfig:
    """Args:
    mlp1: widths of stream 1.
    mlp1_dropout: dropout of stream 1.
    mlp2: widths of stream 2.
    mlp2_dropout: dropout of stream 2.
    batch_norm: batch norm in both streams.
    feature_selection: gate each stream's input (off: both streams read the same input).
    fs_hidden: hidden widths of the gate MLPs.
    fs1_context: features whose vectors drive stream 1's gate (empty: a learned bias).
    fs2_context: features whose vectors drive stream 2's gate (empty: a learned bias).
    num_heads: heads of the bilinear fusion (must divide both streams' last widths).
    """

    mlp1: tuple[int, ...] = (400, 400, 400)
    mlp1_dropout: float = 0.0
    mlp2: tuple[int, ...] = (400, 400, 400)
    mlp2_dropout: float = 0.0
    batch_norm: bool = False
    feature_selection: bool = True
    fs_hidden: tuple[int, ...] = (400,)
    fs1_context: tuple[str, ...] = ()
    fs2_context: tuple[str, ...] = ()
    num_heads: int = 1

    def __post_init__(self) -> None:
        if not self.mlp1 or not self.mlp2:
            raise ValueError("both FinalMLP streams need at least one hidden layer")
        last1, last2 = self.mlp1[-1], self.mlp2[-1]
        if self.num_heads < 1 or last1 % self.num_heads or last2 % self.num_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must divide mlp1[-1] ({last1}) and mlp2[-1] ({last2})"
            )


class FinalMLP(CTRModel):
    """Two gated MLP streams over [flatten(emb), dense], fused bilinearly into one logit.

    Context features of the gates are read from the model's own embedding layer (no second table), so
    the budget stays in one place.

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features (in both streams' input).
        config: streams, gates and fusion.

    Example:
        >>> config = FinalMLPConfig(mlp1=(400,), mlp2=(100,), fs1_context=("user",), num_heads=5)
        >>> model = FinalMLP(embedding, num_dense=0, config=config)
    """

    name = "finalmlp"

    def __init__(
        self, embedding: FeatureEmbedding, num_dense: int, config: FinalMLPConfig | None = None
    ) -> None:
        super().__init__(embedding, num_dense)
        self.config = c = config or FinalMLPConfig()
        width = embedding.output_dim + num_dense
        dim = embedding.embedding_dim
        self.gate1 = self.gate2 = None
        if c.feature_selection:
            self.gate1 = FeatureSelection(slots_of(embedding, c.fs1_context), dim, c.fs_hidden, width)
            self.gate2 = FeatureSelection(slots_of(embedding, c.fs2_context), dim, c.fs_hidden, width)
        self.mlp1 = MLP(width, c.mlp1, c.mlp1_dropout, c.batch_norm)
        self.mlp2 = MLP(width, c.mlp2, c.mlp2_dropout, c.batch_norm)
        self.fusion = BilinearFusion(self.mlp1.output_dim, self.mlp2.output_dim, c.num_heads)

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        emb, x = self.flat_input(sparse, dense)  # [B, S, D], [B, H]
        x1 = self.gate1(emb, x) if self.gate1 is not None else x
        x2 = self.gate2(emb, x) if self.gate2 is not None else x
        return self.fusion(self.mlp1(x1), self.mlp2(x2))

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
