"""Magnitude pruning of trained tables, stored sparse: `--prune SPARSITY` for any table method.

The `round(sparsity * R * D)` smallest-magnitude entries of each table are dropped (DeepLight-style
magnitude pruning, after training); what is left is stored as CSR, so the stored size is what sparse
storage really needs:

    values     float32 [nnz]        the kept entries
    columns    uint8 [nnz]          their column (int16 when D > 256)
    row_ptr    int32 [R + 1]        where each row's entries start (int64 past 2^31 entries)

A lookup rebuilds only the rows it reads. At sparsity s that is about (1 - s)(4 + 1) D + 4 bytes a row
against 4 D: below s = 1/5 + 4 / (5 D) (0.25 at D = 16) pruning costs more than it saves, which
`memory_bytes()` shows.
"""

from __future__ import annotations

import torch

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding
from featmux.embeddings.served import ServedEmbedding, ServingTable


class PrunedTable(ServingTable):
    """A table's largest-magnitude entries in CSR; reads rebuild dense rows with zeros elsewhere.

    Args:
        table: the trained table (its weight is read, not changed).
        sparsity: the share of entries dropped, in [0, 1).

    Example:
        >>> PrunedTable(layer.table_modules()[0], 0.5).read(torch.tensor([0, 5])).shape
        torch.Size([2, D])
    """

    def __init__(self, table: TableEmbedding, sparsity: float) -> None:
        super().__init__()
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        w = table.weight.detach()
        rows, dim = w.shape
        keep = w.numel() - round(sparsity * w.numel())
        flat = w.abs().flatten()
        # exactly `keep` entries (ties broken by position), so a rebuilt layer has the same shapes
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


def prune_embedding(layer: FeatureEmbedding, sparsity: float) -> FeatureEmbedding:
    """`layer` with each table magnitude-pruned to `sparsity` and stored sparse (itself at 0)."""
    if sparsity == 0:
        return layer
    return ServedEmbedding(layer, lambda t: PrunedTable(t, sparsity), {"prune": sparsity}, "--prune")
