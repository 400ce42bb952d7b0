"""PEP-style learned-threshold pruning (Liu et al., ICLR 2021, "Learnable Embedding Sizes for
Recommender Systems"): `--prune S --prune-method pep` for any table method.

Every table row r gets a learnable threshold logit s_r, trained jointly with the model; the layer reads
each entry soft-thresholded,

    w' = sign(w) * relu(|w| - sigmoid(s_r))

so entries below their row's threshold are exactly zero and receive no gradient, and the thresholds
learn how much of each row to drop (PEP's "feature-wise" granularity: one threshold per row, i.e. per
value of a collisionless table). The thresholds start at `sigmoid(init)` (default init -10: 4.5e-5,
well below the N(0, 0.01^2) initial entries, so almost nothing is zero at the start).

After training the table is stored sparse (CSR, counted as magnitude pruning counts it,
`featmux.embeddings.pruning`) at the sparsity reached, and where that is below the target S a final
magnitude cut of w' brings each table to exactly S: PEP's own zeros are never undone, and the stored
size is never above what S allows. The thresholds themselves are training state and are not stored.
The table is not retrained after the cut (PEP's lottery-ticket retraining is not done).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding
from featmux.embeddings.pruning import kept_entries, prune_tables
from featmux.sparse import SparseFeatures

DEFAULT_INIT = -10.0
"""Initial threshold logit s: sigmoid(-10) = 4.5e-5, a small fraction of the initial entries' 0.01."""


class SoftThreshold(nn.Module):
    """One learnable threshold per table row: rows [..., D] -> sign(w) * relu(|w| - sigmoid(s_row)).

    Args:
        num_rows: R, rows of the table.
        init: the initial logit s of every row.
        device: where to allocate.

    Example:
        >>> SoftThreshold(100, -10.0)(torch.randn(4, 16), torch.tensor([0, 1, 2, 99])).shape
        torch.Size([4, 16])
    """

    def __init__(self, num_rows: int, init: float = DEFAULT_INIT, device: torch.device | None = None) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.full((num_rows,), float(init), device=device))

    def forward(self, values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Soft-threshold rows `values` [..., D] of table rows `rows` [...]."""
        threshold = torch.sigmoid(self.logits[rows]).unsqueeze(-1).to(values.dtype)  # [..., 1]
        return torch.sign(values) * F.relu(values.abs() - threshold)

    def thresholded(self, weight: torch.Tensor) -> torch.Tensor:
        """The whole table [R, D] as the layer reads it (no gradient)."""
        with torch.no_grad():
            return self(weight.detach(), torch.arange(weight.shape[0], device=weight.device))


class LearnedPruningEmbedding(FeatureEmbedding):
    """A table-based layer trained with a PEP soft threshold on every table row.

    Args:
        layer: the layer (collisionless, hashing, unified, adaptive: `TableEmbedding` tables only); its
            tables get a `SoftThreshold` each, in place.
        init: the initial threshold logit.

    Example:
        >>> pep = LearnedPruningEmbedding(build_embedding(features, spec, vocabulary), init=-10.0)
        >>> trainer.fit(...)  # trains the thresholds with the model
        >>> served = pep.pruned(0.5)  # CSR at max(reached, 0.5) sparsity
    """

    def __init__(self, layer: FeatureEmbedding, init: float = DEFAULT_INIT) -> None:
        super().__init__(layer.features, layer.embedding_dim)
        tables = layer.table_modules()
        covered = {id(t.weight) for t in tables if getattr(t, "served", None) is None}
        other = [n for n, p in layer.named_parameters() if id(p) not in covered]
        if not tables or other or len(covered) != len(tables):
            raise ValueError(
                "--prune-method pep applies to fp32 table methods (collisionless, hashing, unified, "
                f"adaptive); {layer.method or type(layer).__name__} stores other parameters ({other[:3]}) "
                "or is already in a serving form"
            )
        if any(getattr(t, "pep", None) is not None for t in tables):
            raise ValueError("the layer's tables already have learned thresholds")
        for table in tables:
            table.pep = SoftThreshold(table.weight.shape[0], init, table.weight.device)
        self.inner = layer
        self.method = layer.method
        self.init = float(init)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return self.inner.slot_names

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, S, D], every row read soft-thresholded."""
        return self.inner(sparse)

    def bag_vectors(self, name: str, values: torch.Tensor) -> torch.Tensor:
        return self.inner.bag_vectors(name, values)

    def table_parameters(self) -> list[nn.Parameter]:
        return self.inner.table_parameters()  # the thresholds train as dense parameters

    def config(self) -> dict[str, Any]:
        return {**self.inner.config(), "pep_init": self.init}

    def unpruned_bytes(self) -> int:
        """`memory_bytes()` without the thresholds: the fp32 tables as they would be stored unpruned."""
        logits = sum(t.pep.logits.numel() * t.pep.logits.element_size() for t in self.inner.table_modules())
        return self.memory_bytes() - logits

    def thresholded(self) -> list[torch.Tensor]:
        """Each table [R, D] as the layer reads it, in `table_modules()` order."""
        tables: list[TableEmbedding] = self.inner.table_modules()
        return [t.pep.thresholded(t.weight) for t in tables]

    def sparsity(self) -> float:
        """The share of table entries the learned thresholds have zeroed."""
        tables = self.thresholded()
        return 1 - sum(int(torch.count_nonzero(w)) for w in tables) / sum(w.numel() for w in tables)

    def pruned(self, sparsity: float) -> FeatureEmbedding:
        """The trained layer stored sparse: each table's nonzero entries of w', cut by magnitude to at
        most `sparsity`'s count (the layer's tables are replaced; train nothing further).

        Args:
            sparsity: the target S in [0, 1); a table already sparser keeps its own zeros.
        """
        weights = self.thresholded()
        kept = [min(int(torch.count_nonzero(w)), kept_entries(w.numel(), sparsity)) for w in weights]
        for table in self.inner.table_modules():
            del table.pep  # training state, not stored
        setting = {"prune": sparsity, "prune_method": "pep", "prune_kept": kept}
        return prune_tables(self.inner, weights, kept, setting)
