"""FinalNet (Zhu et al., "FINAL: Factorized Interaction Layer for CTR Prediction", SIGIR 2023).

Each block is an MLP whose linear layers are factorized interaction layers: h = W x split in halves
(h_1, h_2), out = [h_2, h_1 * h_2], so every layer multiplies features as well as adding them. With two
blocks the logit is the mean of both blocks' logits; block 1 may read field-gated embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict
from featmux.models.layers import MLP
from featmux.sparse import SparseFeatures


class FactorizedInteraction(nn.Module):
    """A linear layer of width `output_dim` whose output halves are [h_2, h_1 * h_2] (concat residual).

    Args:
        input_dim: input width.
        output_dim: output width (even).
    """

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        if output_dim % 2:
            raise ValueError(f"a factorized interaction layer needs an even width, got {output_dim}")
        self.linear = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, I] -> [B, O]."""
        h2, h1 = self.linear(x).chunk(2, dim=-1)  # [B, O/2] each
        return torch.cat([h2, h1 * h2], dim=-1)


class FieldGate(nn.Module):
    """Field gating: each slot's vector times a gate mixed from all slots, concatenated to the input.

    gates = W e (mixing across slots, per dimension), out = [e, e * gates]; W starts at 0 and the bias at
    1, so training starts from the identity gate.

    Args:
        num_slots: S.
    """

    def __init__(self, num_slots: int) -> None:
        super().__init__()
        self.mix = nn.Linear(num_slots, num_slots)
        nn.init.zeros_(self.mix.weight)
        nn.init.ones_(self.mix.bias)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """emb [B, S, D] -> [B, 2S, D]."""
        gates = self.mix(emb.transpose(1, 2)).transpose(1, 2)  # [B, S, D]
        return torch.cat([emb, emb * gates], dim=1)


@dataclass(frozen=True)
class FinalNetConfig:
    """Args:
    block1: widths of block 1 (each even).
    block1_dropout: dropout of block 1.
    block2: widths of block 2 (each even; empty: one block).
    block2_dropout: dropout of block 2.
    batch_norm: batch norm in the blocks.
    field_gate: feed block 1 the field-gated embeddings.
    """

    block1: tuple[int, ...] = (400, 400, 400)
    block1_dropout: float = 0.0
    block2: tuple[int, ...] = (400,)
    block2_dropout: float = 0.0
    batch_norm: bool = True
    field_gate: bool = True

    def __post_init__(self) -> None:
        if not self.block1:
            raise ValueError("FinalNet's block 1 needs at least one layer")
        odd = [w for w in (*self.block1, *self.block2) if w % 2]
        if odd:
            raise ValueError(f"FinalNet block widths must be even, got {odd}")


class FinalNet(CTRModel):
    """One or two factorized-interaction blocks over the embeddings (and numeric features).

    FuxiCTR also trains each block's own logit with an auxiliary loss; here only the averaged logit is
    trained (the trainer has one loss).

    Args:
        embedding: any embedding layer.
        num_dense: N numeric features (appended to both blocks' inputs).
        config: block shapes and gating.

    Example:
        >>> config = FinalNetConfig(block1=(400, 400), block1_dropout=0.1, block2=(400,), block2_dropout=0.1)
        >>> model = FinalNet(embedding, num_dense=0, config=config)
    """

    name = "finalnet"

    def __init__(
        self, embedding: FeatureEmbedding, num_dense: int, config: FinalNetConfig | None = None
    ) -> None:
        super().__init__(embedding, num_dense)
        self.config = c = config or FinalNetConfig()
        width = embedding.output_dim + num_dense
        self.gate = FieldGate(embedding.num_slots) if c.field_gate else None
        gated = width + (embedding.output_dim if c.field_gate else 0)
        # a block is an MLP of factorized interaction layers: FI -> [BatchNorm] -> ReLU -> [Dropout]
        self.block1 = MLP(gated, c.block1, c.block1_dropout, c.batch_norm, FactorizedInteraction)
        self.head1 = nn.Linear(self.block1.output_dim, 1)
        self.block2 = (
            MLP(width, c.block2, c.block2_dropout, c.batch_norm, FactorizedInteraction) if c.block2 else None
        )
        self.head2 = nn.Linear(self.block2.output_dim, 1) if self.block2 is not None else None

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        emb, x = self.flat_input(sparse, dense)  # [B, S, D], [B, S * D + N]
        x1 = x
        if self.gate is not None:
            x1 = self.gate(emb).flatten(1)  # [B, 2 S D]
            x1 = torch.cat([x1, dense], dim=1) if self.num_dense else x1
        out = self.head1(self.block1(x1)).squeeze(1)
        if self.block2 is not None and self.head2 is not None:
            out = 0.5 * (out + self.head2(self.block2(x)).squeeze(1))
        return out

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
