"""The contract every CTR model meets: a built embedding layer in, logits out.

Models keep sparse and dense apart: the constructor takes an already built `FeatureEmbedding` (any
method, possibly sharded) and the number of numeric features; it never builds optimizers, moves
devices, or touches files. `forward(sparse, dense)` returns logits [B].
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.sparse import SparseFeatures

C = TypeVar("C")


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build a frozen config dataclass, rejecting unknown keys (a typo is an error, not a default)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; valid options are {sorted(names)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


class CTRModel(nn.Module, ABC):
    """Base class: an embedding layer plus a dense architecture producing one logit per row.

    Args:
        embedding: any `FeatureEmbedding` ([B, S, D] out).
        num_dense: N, numeric features fed beside the embeddings.
    """

    name: str = ""

    def __init__(self, embedding: FeatureEmbedding, num_dense: int) -> None:
        super().__init__()
        if num_dense < 0:
            raise ValueError(f"num_dense must be >= 0, got {num_dense}")
        self.embedding = embedding
        self.num_dense = num_dense

    @abstractmethod
    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        """Logits for a batch.

        Args:
            sparse: categorical fingerprints (see `featmux.sparse`).
            dense: float32 [B, N] numeric features.

        Returns:
            Tensor [B] of logits.
        """

    @abstractmethod
    def model_config(self) -> dict[str, Any]:
        """Plain values that rebuild the dense part (with `featmux.models.build_model`)."""

    def dense_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the embedding tables."""
        tables = {id(p) for p in self.embedding.table_parameters()}
        return [p for p in self.parameters() if id(p) not in tables]

    def flat_input(self, sparse: SparseFeatures, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(emb [B, S, D], x [B, S * D + N]): the embeddings and the flat input of deep parts."""
        emb = self.embedding(sparse)  # [B, S, D]
        flat = emb.flatten(1)  # [B, S * D]
        return emb, (torch.cat([flat, dense], dim=1) if self.num_dense else flat)


def slots_of(embedding: FeatureEmbedding, features: Sequence[str]) -> list[int]:
    """Indices of the output slots of the named features (every chunk of each), in slot order.

    Args:
        embedding: the layer whose `slot_names` (`feature#chunk`) are searched.
        features: feature names.

    Raises:
        ValueError: a name that is no feature of the layer, listing the valid ones.
    """
    owners = [s.rsplit("#", 1)[0] for s in embedding.slot_names]
    unknown = sorted(set(features) - set(owners))
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; the embedding has {sorted(set(owners))}")
    wanted = set(features)
    return [i for i, owner in enumerate(owners) if owner in wanted]


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain values (enums as their values, tuples as lists)."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        out[f.name] = v.value if hasattr(v, "value") else (list(v) if isinstance(v, tuple) else v)
    return out
