"""Full tables for the features too small to gain from compression, beside any compressed layer.

A method's `solve` may decide that some features are cheaper (or no dearer) in a collisionless table
than compressed, as the VLDB 2024 study's `threshold` does; those keep exact rows, paid from the
budget. `FullTableSplit` joins the method's layer for the other features with that table; its slots
are the compressed layer's first, then the full-table features' (as Unified Embedding's private tables).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from featmux.embeddings.base import FeatureEmbedding
from featmux.embeddings.collisionless import CollisionlessEmbedding
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature
from featmux.sparse import SparseFeatures


def full_table_bytes(cardinality: int, embedding_dim: int, bytes_per_value: int, key_bytes: int) -> int:
    """What a collisionless table of one feature stores: |V| + 1 rows, |V| keys and one row start."""
    return (cardinality + 1) * embedding_dim * bytes_per_value + (cardinality + 1) * key_bytes


class FullTableSplit(FeatureEmbedding):
    """A compressed layer for most features and a collisionless table for the features in `full`.

    Args:
        features: all categorical features, in schema order.
        compressed: the method's layer over the features not in `full` (None when every feature is full).
        full: the collisionless layer of the full-table features (None when there are none).
        config: the method's config of the whole layer (what `config()` returns, with its `full`).

    Example:
        >>> layer = with_full_tables(features, qr_config, lambda big: QREmbedding(big, ...), None)
        >>> layer(sparse).shape  # [B, S, 16]: the compressed slots, then the small features' slots
    """

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        compressed: FeatureEmbedding | None,
        full: CollisionlessEmbedding | None,
        config: Mapping[str, Any],
    ) -> None:
        parts = [p for p in (compressed, full) if p is not None]
        if not parts:
            raise ValueError("FullTableSplit needs a compressed layer, a full table, or both")
        super().__init__(features, parts[0].embedding_dim)
        covered = [f.name for p in parts for f in p.features]
        if sorted(covered) != sorted(f.name for f in self.features):
            raise ValueError(
                f"the parts cover {sorted(covered)}, not the features {[f.name for f in features]}"
            )
        self.compressed = compressed
        self.full = full
        self._config = dict(config)
        self.method = str(config["method"])
        columns = {f.name: i for i, f in enumerate(self.univalent)}
        bag_index = {f.name: j for j, f in enumerate(self.multivalent)}
        device = next(iter(parts[0].state_dict().values())).device
        self._routes: list[tuple[FeatureEmbedding, list[int]]] = []
        for j, part in enumerate(parts):
            index = [columns[f.name] for f in part.univalent]
            self.register_buffer(
                f"_columns{j}", torch.tensor(index, dtype=torch.int64, device=device), persistent=False
            )
            self._routes.append((part, [bag_index[f.name] for f in part.multivalent]))

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(name for part, _ in self._routes for name in part.slot_names)

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, S, D], compressed slots first, full tables last."""
        outs = []
        for j, (part, bags) in enumerate(self._routes):
            ids = sparse.ids.index_select(1, getattr(self, f"_columns{j}"))  # [B, F_part]
            outs.append(part(SparseFeatures(ids, tuple(sparse.bags[b] for b in bags))))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # [B, S, D]

    def table_parameters(self) -> list[torch.nn.Parameter]:
        return [p for part, _ in self._routes for p in part.table_parameters()]

    def set_sparse_gradients(self, enabled: bool) -> None:
        for part, _ in self._routes:
            part.set_sparse_gradients(enabled)

    def fill_vocabulary(self, vocabulary: Vocabulary, min_count: int = 1) -> None:
        """Copy the full-table features' vocabularies into their table (once, before training)."""
        if self.full is not None:
            self.full.fill_vocabulary(vocabulary, min_count)

    def config(self) -> dict[str, Any]:
        return dict(self._config)


def with_full_tables(
    features: Sequence[CategoricalFeature],
    config: Mapping[str, Any],
    build: Callable[[Sequence[CategoricalFeature]], FeatureEmbedding],
    device: torch.device | None,
) -> FeatureEmbedding:
    """The layer of `config`: `build(compressed features)`, joined with full tables for `config["full"]`.

    Args:
        features: all categorical features.
        config: a method's config; its `full` maps each full-table feature to its cardinality.
        build: makes the method's own layer over the given (compressed) features.
        device: where to allocate the full tables.
    """
    full_sizes = dict(config.get("full") or {})
    if not full_sizes:
        return build(features)
    rest = [f for f in features if f.name not in full_sizes]
    small = [f for f in features if f.name in full_sizes]
    table = CollisionlessEmbedding(small, int(config["embedding_dim"]), full_sizes, device)
    return FullTableSplit(features, build(rest) if rest else None, table, config)
