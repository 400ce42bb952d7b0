"""The one interface every embedding method implements, and the table lookup they share.

Every method maps the categorical features of a batch to S embedding slots of width D:

    forward(SparseFeatures) -> Tensor [B, S, D]

A feature contributes one slot per chunk (K_f probes in Unified Embedding, 1 elsewhere); models see
only slots, so any method fits any model. Slots come in a fixed order: the univalent features in the
order they were given, then the multivalent ones (their bags pooled), then any extra slots a method
adds (Unified Embedding's private tables). `slot_names` lists them as `feature#chunk`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from featmux.features import CategoricalFeature, Pooling
from featmux.sparse import SparseFeatures

INIT_STD = 0.01  # N(0, 0.01^2): small enough that early dot products (FM, cross layers) stay tame


class FeatureEmbedding(nn.Module, ABC):
    """Base class of embedding methods: categorical features -> [B, S, D].

    Args:
        features: the categorical features, in the order of the schema they come from.
        embedding_dim: D, the width of one slot.
    """

    method: str = ""

    def __init__(self, features: Sequence[CategoricalFeature], embedding_dim: int) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if not features:
            raise ValueError("an embedding layer needs at least one feature")
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        self.features: tuple[CategoricalFeature, ...] = tuple(features)
        self.embedding_dim = embedding_dim
        self.univalent = tuple(f for f in self.features if not f.multivalent)
        self.multivalent = tuple(f for f in self.features if f.multivalent)

    @abstractmethod
    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch.

        Args:
            sparse: ids [B, F_u] and one bag per multivalent feature, in this layer's feature order.

        Returns:
            Tensor [B, S, D].
        """

    @property
    @abstractmethod
    def slot_names(self) -> tuple[str, ...]:
        """Names of the S output slots, `feature#chunk`, in output order."""

    @property
    def num_slots(self) -> int:
        return len(self.slot_names)

    @property
    def output_dim(self) -> int:
        """S * D: width of the flattened output."""
        return self.num_slots * self.embedding_dim

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Plain values that rebuild this layer with `featmux.embeddings.embedding_from_config`."""

    def num_parameters(self) -> int:
        """Exact count of trainable parameters (table cells), from the tensors themselves."""
        return sum(p.numel() for p in self.parameters())

    def memory_bytes(self) -> int:
        """Bytes of parameters and buffers (e.g. a vocabulary's fingerprints), numel x element size."""
        tensors = [*self.parameters(), *self.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def table_parameters(self) -> list[nn.Parameter]:
        """Parameters that receive sparse gradients when `set_sparse_gradients(True)`."""
        return []

    def set_sparse_gradients(self, enabled: bool) -> None:
        """Produce sparse gradients for the tables (for a sparse optimizer such as SparseAdam)."""
        for module in self.modules():
            if isinstance(module, TableEmbedding):
                module._sparse = enabled


def _chunk_offsets(offsets: torch.Tensor, num_values: int, chunks: int) -> torch.Tensor:
    """CSR offsets of `chunks` stacked copies of a bag batch: [B + 1] -> [chunks * B + 1]."""
    starts = offsets[:-1].unsqueeze(0) + num_values * torch.arange(chunks, device=offsets.device).unsqueeze(1)
    end = offsets.new_full((1,), chunks * num_values)
    return torch.cat([starts.reshape(-1), end])


class TableEmbedding(FeatureEmbedding):
    """A method that reads rows of one [R, D] table: subclasses say which rows, this class reads them.

    Args:
        features: the categorical features.
        embedding_dim: D.
        num_rows: R, rows of the table.
        device: where to allocate the table; `meta` allocates nothing and skips initialization.
    """

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        num_rows: int,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        if num_rows < 1:
            raise ValueError(f"{type(self).__name__} needs at least one row, got {num_rows}")
        self.weight = nn.Parameter(torch.empty(num_rows, embedding_dim, device=device))
        self._sparse = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.device.type == "meta":
            return
        nn.init.normal_(self.weight, std=INIT_STD)

    @property
    def num_rows(self) -> int:
        return self.weight.shape[0]

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.weight]

    def chunks_of(self, feature: CategoricalFeature) -> int:
        """K_f, the number of slots (probes) of a feature."""
        return 1

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(
            f"{f.name}#{c}" for f in (*self.univalent, *self.multivalent) for c in range(self.chunks_of(f))
        )

    @abstractmethod
    def univalent_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows read for the univalent features: ids [B, F_u] -> rows [B, S_u] (int64)."""

    @abstractmethod
    def bag_rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        """Rows read for multivalent feature `index`: values [L] -> rows [L, K]."""

    def _pool(self, rows: torch.Tensor, offsets: torch.Tensor, pooling: Pooling) -> torch.Tensor:
        num_values, chunks = rows.shape
        batch = offsets.numel() - 1
        pooled = F.embedding_bag(
            rows.t().reshape(-1),  # [K * L], chunk-major
            self.weight,
            _chunk_offsets(offsets, num_values, chunks),
            mode=pooling.value,
            sparse=self._sparse,
            include_last_offset=True,
        )  # [K * B, D]
        return pooled.view(chunks, batch, -1).transpose(0, 1)  # [B, K, D]

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, S, D]."""
        if sparse.ids.shape[1] != len(self.univalent) or len(sparse.bags) != len(self.multivalent):
            raise ValueError(
                f"{type(self).__name__} expects {len(self.univalent)} univalent id columns and "
                f"{len(self.multivalent)} bags, got {sparse.ids.shape[1]} and {len(sparse.bags)}"
            )
        parts = []
        if self.univalent:
            parts.append(F.embedding(self.univalent_rows(sparse.ids), self.weight, sparse=self._sparse))
        for j, (feature, bag) in enumerate(zip(self.multivalent, sparse.bags, strict=True)):
            parts.append(self._pool(self.bag_rows(j, bag.values), bag.offsets, feature.pooling))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B, S, D]
