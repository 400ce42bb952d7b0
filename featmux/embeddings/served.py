"""Tables served in another form than their float training weights (quantized, pruned), read row by row.

A trained table method (collisionless, hashing, unified, adaptive: the `TableEmbedding` layers) can be
served from quantized codes (`featmux.embeddings.precision`) or from sparse rows
(`featmux.embeddings.pruning`). `ServedEmbedding` replaces each table's weight by a `ServingTable`
that rebuilds only the rows a batch looks up; `memory_bytes()` then counts what that form stores.
The result is for evaluation and serving: served tables are not trained further.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding, embed_rows
from featmux.sparse import SparseFeatures


class ServingTable(nn.Module, ABC):
    """One table in its serving form: `read` rebuilds float rows [..., D] from what it stores."""

    @abstractmethod
    def read(self, rows: torch.Tensor) -> torch.Tensor:
        """Float rows [..., D] of the table for row indices [...]."""

    @property
    @abstractmethod
    def num_rows(self) -> int:
        """R, the rows of the table it stores."""

    def embed(self, table: TableEmbedding, sparse: SparseFeatures) -> torch.Tensor:
        """`TableEmbedding.forward` with rows read from this form: [B, S, D]."""
        return embed_rows(table, sparse, self.read)


class ServedEmbedding(FeatureEmbedding):
    """A trained table-based layer whose tables are stored in a serving form.

    Args:
        layer: the layer; each table's float weight is replaced in place by `serve(table)`.
        serve: makes a table's serving form from its trained weights.
        setting: what the config records to rebuild that form (e.g. {"precision": "int8"}).
        flag: the option's name in messages (e.g. "--precision").

    Example:
        >>> int8 = lambda t: QuantizedTable(t, Precision.INT8)
        >>> served = ServedEmbedding(layer, int8, {"precision": "int8"}, "--precision")
        >>> served(sparse).shape == layer_output_shape
        True
    """

    def __init__(
        self,
        layer: FeatureEmbedding,
        serve: Callable[[TableEmbedding], ServingTable],
        setting: Mapping[str, Any],
        flag: str,
    ) -> None:
        super().__init__(layer.features, layer.embedding_dim)
        tables = layer.table_modules()
        if any(getattr(t, "served", None) is not None for t in tables):
            raise ValueError(f"{flag}: the layer's tables are already in a serving form")
        covered = {id(t.weight) for t in tables}
        other = [n for n, p in layer.named_parameters() if id(p) not in covered]
        if not tables or other:
            raise ValueError(
                f"{flag} applies to table methods (collisionless, hashing, unified, adaptive); "
                f"{layer.method or type(layer).__name__} stores other parameters ({other[:3]})"
            )
        for table in tables:
            table.served = serve(table)
            del table.weight  # the serving form replaces it
        self.inner = layer
        self.method = layer.method
        self.setting = dict(setting)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return self.inner.slot_names

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, S, D], rows rebuilt from the serving form."""
        return self.inner(sparse)

    def config(self) -> dict[str, Any]:
        return {**self.inner.config(), **self.setting}
