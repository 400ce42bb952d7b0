"""Building blocks shared by the CTR models: MLP, cross network, FM interaction, first-order term."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from featmux.models.dropout import FastDropout


class MLP(nn.Sequential):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden layer; no output layer (dropout: `FastDropout`).

    Args:
        input_dim: width of the input.
        hidden: widths of the hidden layers.
        dropout: dropout after each activation (0 disables).
        batch_norm: batch normalization before each activation.
        linear: builds each layer's (input width, output width) map; nn.Linear, or e.g. FinalNet's
            factorized interaction layer.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        linear: Callable[[int, int], nn.Module] = nn.Linear,
    ) -> None:
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers.append(linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(FastDropout(dropout))
            width = h
        super().__init__(*layers)
        self.output_dim = width


def to_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """x in the autocast dtype (e.g. bf16) while autocast is on for its device, else x unchanged.

    Elementwise ops promote a bf16 matmul output back to float32 when their other input is float32, so a
    float32 input kept beside bf16 layers (DCN-v2's x0 in every cross layer) makes each layer cast
    back and forth. Cast once at the input and the activations stay bf16 between layers.
    """
    kind = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(kind):
        return x.to(torch.get_autocast_dtype(kind))
    return x


class CrossNetwork(nn.Module):
    """DCN-v2 cross layers (Wang et al. 2021): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.

    Args:
        dim: width of x_0.
        num_layers: number of cross layers.
        low_rank: if set, W_l = U_l V_l^T with rank `low_rank` (the paper's DCN-Mix without experts).
    """

    def __init__(self, dim: int, num_layers: int, low_rank: int | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if low_rank is None:
            self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
        else:
            if low_rank < 1:
                raise ValueError(f"low_rank must be >= 1, got {low_rank}")
            self.layers = nn.ModuleList(
                nn.Sequential(nn.Linear(dim, low_rank, bias=False), nn.Linear(low_rank, dim))
                for _ in range(num_layers)
            )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 [B, H] -> [B, H]."""
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


def fm_interaction(emb: torch.Tensor) -> torch.Tensor:
    """Second-order FM term, sum over slot pairs of <e_i, e_j>: [B, S, D] -> [B]."""
    square_of_sum = emb.sum(dim=1).pow(2)  # [B, D]
    sum_of_square = emb.pow(2).sum(dim=1)  # [B, D]
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class FirstOrder(nn.Module):
    """The linear (first-order) term: a learned projection of each slot's vector, plus dense weights.

    A value's first-order weight is <w_s, e_v>: it reuses the embedding table instead of a second
    1-wide table, so every method's parameter budget is spent in one place.

    Args:
        num_slots: S.
        embedding_dim: D.
        num_dense: N numeric features.
    """

    def __init__(self, num_slots: int, embedding_dim: int, num_dense: int) -> None:
        super().__init__()
        self.slot_weight = nn.Parameter(torch.zeros(num_slots, embedding_dim))
        self.dense = nn.Linear(num_dense, 1) if num_dense else None
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """emb [B, S, D], dense [B, N] -> [B]."""
        out = (emb * self.slot_weight).sum(dim=(1, 2)) + self.bias
        if self.dense is not None:
            out = out + self.dense(dense).squeeze(1)
        return out
