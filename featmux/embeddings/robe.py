"""ROBE-Z: random offset block embeddings (Desai et al., MLSys 2022), CLI name `robe`.

All features share ONE flat weight array of S floats (the VLDB 2024 study's default layout). A value's
D-wide vector is D / Z blocks of Z consecutive floats: block b of value v of feature f starts at the
hashed offset h(v; f, b) mod S (reading past the end wraps around to the start) and is multiplied by a
hashed random sign. Blocks of different values overlap partially rather than collide whole rows, and
the budget is met to the float: S = budget / 4 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import INIT_STD, FeatureEmbedding, ValueEmbedding
from featmux.embeddings.budget import FP32_BYTES
from featmux.embeddings.registry import BudgetTarget, EmbeddingMethod, VocabularyStats, register
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64


class RobeEmbedding(ValueEmbedding):
    """Every value reads D / Z signed blocks of Z floats at hashed offsets of one circular array.

    Args:
        features: the categorical features.
        embedding_dim: D.
        size: S, floats in the shared array.
        block: Z, floats per block (divides D; Z = D reads one block per value).
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> RobeEmbedding(features, embedding_dim=16, size=100_000, block=8)(sparse).shape
        torch.Size([B, F, 16])
    """

    method = "robe"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        size: int,
        block: int,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        if block < 1 or embedding_dim % block:
            raise ValueError(f"block (Z = {block}) must be >= 1 and divide embedding_dim ({embedding_dim})")
        if size < 1:
            raise ValueError(f"the ROBE array needs at least one float, got size {size}")
        self.size, self.block = int(size), int(block)
        self.weight = nn.Parameter(torch.empty(self.size, device=device))
        order = [*self.univalent, *self.multivalent]
        blocks = embedding_dim // block
        # salts (f, b) pick block b's offset; salts (f, blocks + b) its sign
        salts = [[feature_salt(f.name, i) for i in range(2 * blocks)] for f in order]
        self.register_buffer("salts", torch.tensor(salts, dtype=torch.int64, device=device), persistent=False)
        self.register_buffer("within", torch.arange(block, device=device), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.device.type == "meta":
            return
        nn.init.normal_(self.weight, std=INIT_STD)

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.weight]

    def embed(self, values: torch.Tensor, index: slice | int) -> torch.Tensor:
        blocks = self.embedding_dim // self.block
        mixed = splitmix64(values).unsqueeze(-1)  # [..., 1]
        salts = self.salts[index]  # [F', 2 * blocks] or [2 * blocks]
        starts = salted_rows(mixed, salts[..., :blocks], self.size)  # [..., blocks]
        signs = salted_rows(mixed, salts[..., blocks:], 2).mul_(2).sub_(1)  # +-1, [..., blocks]
        at = torch.remainder(starts.unsqueeze(-1) + self.within, self.size)  # [..., blocks, Z], circular
        vectors = self.weight[at] * signs.unsqueeze(-1).to(self.weight.dtype)  # [..., blocks, Z]
        return vectors.flatten(-2)  # [..., D]

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "size": self.size,
            "block": self.block,
        }


@dataclass(frozen=True)
class RobeOptions:
    """Options of the `robe` method (`embedding_options`).

    Args:
        block: Z, floats per block; 0 means Z = D (one block per value).

    Example:
        >>> RobeOptions(block=4)
    """

    block: int = 0

    def __post_init__(self) -> None:
        if self.block < 0:
            raise ValueError(f"block must be >= 0 (0: the embedding dim), got {self.block}")


class RobeMethod(EmbeddingMethod):
    """`robe`: the array gets the whole budget, to the float."""

    name = "robe"
    options = RobeOptions

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: RobeOptions,
    ) -> dict[str, Any]:
        assert target is not None
        size = target.per_value(FP32_BYTES)  # the array is all the layer stores
        block = options.block or embedding_dim
        if size < block:
            raise ValueError(
                f"a budget of {target} is too small for robe: fewer floats than one block ({block})"
            )
        return {"method": self.name, "embedding_dim": embedding_dim, "size": size, "block": block}

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        return RobeEmbedding(
            features, int(config["embedding_dim"]), int(config["size"]), int(config["block"]), device
        )


register(RobeMethod())
