"""Pruned tables stored sparse: `--prune SPARSITY` for any table method.

By default the `round(sparsity * R * D)` smallest-magnitude entries of each table are dropped
(DeepLight-style magnitude pruning, after training); `--prune-method pep` learns the zeros during
training instead (`featmux.embeddings.pep`). Either way what is left is stored as CSR, so the stored
size is what sparse storage really needs:

    values     float32 [nnz]        the kept entries
    columns    uint8 [nnz]          their column (int16 when D > 256)
    row_ptr    int32 [R + 1]        where each row's entries start (int64 past 2^31 entries)

A lookup rebuilds only the rows it reads. At sparsity s that is about (1 - s)(4 + 1) D + 4 bytes a row
against 4 D: below s = 1/5 + 4 / (5 D) (0.25 at D = 16) pruning costs more than it saves, which
`memory_bytes()` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum, unique
from typing import Any

import torch

from featmux.embeddings.base import FeatureEmbedding
from featmux.embeddings.served import ServedEmbedding, ServingTable


@unique
class PruneMethod(Enum):
    MAGNITUDE = "magnitude"  # after training, the smallest entries of each table
    PEP = "pep"  # learned soft thresholds during training, then a magnitude cut to the target


def kept_entries(numel: int, sparsity: float) -> int:
    """Entries a table of `numel` entries keeps at `sparsity`: numel - round(sparsity * numel)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return numel - round(sparsity * numel)


class PrunedTable(ServingTable):
    """A table's `keep` largest-magnitude entries in CSR; reads rebuild dense rows with zeros elsewhere.

    Args:
        weight: the trained table [R, D] (read, not changed).
        keep: how many entries are stored (ties broken by position), at most R * D.

    Example:
        >>> w = layer.table_modules()[0].weight
        >>> PrunedTable(w, kept_entries(w.numel(), 0.5)).read(torch.tensor([0, 5])).shape
        torch.Size([2, D])
    """

    def __init__(self, weight: torch.Tensor, keep: int) -> None:
        super().__init__()
        w = weight.detach()
        rows, dim = w.shape
        if not 0 <= keep <= w.numel():
            raise ValueError(f"keep must be in [0, {w.numel()}], got {keep}")
        flat = w.abs().flatten()
        # exactly `keep` entries, so a rebuilt layer has the same shapes
        kept = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        kept[torch.topk(flat, keep, sorted=False).indices] = True
        mask = kept.view(rows, dim)
        counts = mask.sum(1)
        index_dtype = torch.int32 if w.numel() < 2**31 else torch.int64
        self.dim = dim
        self.register_buffer("values", w[mask].contiguous())
        self.register_buffer("columns", mask.nonzero()[:, 1].to(torch.uint8 if dim <= 256 else torch.int16))
        ptr = torch.zeros(rows + 1, dtype=torch.int64, device=w.device)
        ptr[1:] = counts.cumsum(0)
        self.register_buffer("row_ptr", ptr.to(index_dtype))

    @property
    def num_rows(self) -> int:
        return self.row_ptr.numel() - 1

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        flat = rows.reshape(-1)
        start, end = self.row_ptr[flat].long(), self.row_ptr[flat + 1].long()
        counts = end - start  # entries of each requested row
        owner = torch.repeat_interleave(torch.arange(flat.numel(), device=flat.device), counts)  # [E]
        first = torch.cumsum(counts, 0) - counts
        at = start[owner] + torch.arange(owner.numel(), device=flat.device) - first[owner]  # [E]
        dense = self.values.new_zeros(flat.numel(), self.dim)
        dense[owner, self.columns[at].long()] = self.values[at]
        return dense.view(*rows.shape, self.dim)


def prune_tables(
    layer: FeatureEmbedding,
    weights: Sequence[torch.Tensor],
    kept: Sequence[int],
    setting: Mapping[str, Any],
) -> FeatureEmbedding:
    """`layer` with table i stored as the `kept[i]` largest entries of `weights[i]` (CSR).

    Args:
        layer: a table-based layer (its tables, in `table_modules()` order, are replaced).
        weights: what each table stores before the cut (its weight, or PEP's thresholded weight).
        kept: entries kept per table.
        setting: what the config records to rebuild these shapes (e.g. {"prune": 0.5}).
    """
    tables = layer.table_modules()
    if len(weights) != len(tables) or len(kept) != len(tables):
        raise ValueError(f"{len(tables)} tables, {len(weights)} weights and {len(kept)} kept counts")
    form = {id(t): PrunedTable(w, int(k)) for t, w, k in zip(tables, weights, kept, strict=True)}
    return ServedEmbedding(layer, lambda t: form[id(t)], setting, "--prune")


def prune_embedding(layer: FeatureEmbedding, sparsity: float) -> FeatureEmbedding:
    """`layer` with each table magnitude-pruned to `sparsity` and stored sparse (itself at 0)."""
    if sparsity == 0:
        return layer
    weights = [t.weight for t in layer.table_modules()]
    kept = [kept_entries(w.numel(), sparsity) for w in weights]
    return prune_tables(layer, weights, kept, {"prune": sparsity})
