"""Clustered compositional embeddings (Tsang & Ahle, NeurIPS 2023, "Clustering the sketch"), CLI name `cce`.

A value v of feature f reads one row from each of c columns, small tables of k_f rows, and sums them:

    e(v) = sum_i T_i[p_i(v)]          p_i(v) = pointer of v in column i

Pointers start as hashes (one salt per feature and column: a compositional, multi-hash sketch). Every
`recluster_every` training steps (the trainer's `on_train_step` hook, `featmux.training.hooks`), for
each feature, Lloyd k-means with k_f clusters runs on the current embeddings of its known values; the
clusters replace one column: its rows become the centroids and its pointers the assignments, so the
learned structure survives as a codebook. The other columns restart under fresh hashes (with the
default c = 2 that is the next column, as in the paper) and learn the residual: they start at the
least-squares fit of what the centroids miss (`fit_residual`), or at zero as in the paper. The column
clustered cycles 0, 1, ..., c - 1. After `reclusters` rounds the pointers stay fixed.

Pointers are per value, so the known values need a vocabulary: the H most frequent training values
overall (a feature with a heavier head gets more) keep a sorted int64 key and c int32 pointers each,
all counted in `memory_bytes()`; any other value (unseen, or outside the budget's H) reads the
columns' hashes. `solve` gives at most `pointer_share` of the budget to known values and the rest to
the columns' rows, split across features in proportion to sqrt(|V_f| + 1) (capped at |V_f| + 1: c
columns of k rows give k^c sums, so about sqrt(n) rows per column tell n values apart, and a small
feature keeps a row per value instead of the one row a split by cardinality would leave it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featmux.embeddings.adaptive import find_keys, hot_key_table, hottest
from featmux.embeddings.base import INIT_STD, FeatureEmbedding, ValueEmbedding
from featmux.embeddings.budget import split_rows
from featmux.embeddings.kmeans import kmeans
from featmux.embeddings.registry import BudgetTarget, BudgetUnit, EmbeddingMethod, VocabularyStats, register
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64, stable_index

POINTER_BYTES = 4  # int32: a pointer indexes one feature's column (k_f < 2^31 rows)
SALT_BYTES = 8  # int64: a column's hash salt changes at re-clustering, so it is stored
LLOYD_ITERATIONS = 5  # per k-means; each is one pass over a feature's known values (distances in chunks)


@dataclass(frozen=True)
class CCEOptions:
    """Options of the `cce` method (`embedding_options`).

    Args:
        columns: c, the tables a value sums one row of (>= 1).
        recluster_every: training steps between re-clusterings (0: never re-cluster, plain hashing).
        reclusters: how many re-clusterings at most (after them the pointers stay fixed).
        seed: seeds the k-means initial centroids (with the round and the feature name).
        pointer_share: the most of the budget spent on known values' keys and pointers (0 <= share < 1).
        fit_residual: after a re-clustering, start each re-hashed column at the least-squares fit of
            what the centroids miss (the mean residual of the known values hashed to each row); False:
            at zero, as in the paper (a larger drop in accuracy right after each re-clustering).

    Example:
        >>> CCEOptions(columns=2, recluster_every=500, reclusters=3)
    """

    columns: int = 2
    recluster_every: int = 1000
    reclusters: int = 3
    seed: int = 0
    pointer_share: float = 0.5
    fit_residual: bool = True

    def __post_init__(self) -> None:
        if self.columns < 1:
            raise ValueError(f"columns must be >= 1, got {self.columns}")
        for name in ("recluster_every", "reclusters", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.pointer_share < 1:
            raise ValueError(f"pointer_share must be in [0, 1), got {self.pointer_share}")


class ClusteredEmbedding(ValueEmbedding):
    """c columns of k_f rows per feature; a value sums one row of each, by pointer (known) or hash.

    Args:
        features: the categorical features.
        embedding_dim: D.
        rows: k_f, rows of each column per feature name.
        known: H_f, values per feature name with stored pointers (their keys come with
            `fill_vocabulary` or the state_dict).
        options: columns and the re-clustering schedule (`pointer_share` is used by `solve` only);
            None: the defaults.
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> layer = ClusteredEmbedding(features, 16, {"user": 300, "ad": 31}, {"user": 500, "ad": 30})
        >>> layer.fill_vocabulary(vocabulary)
        >>> layer(sparse).shape  # [B, 2, 16]; the Trainer re-clusters it every 1000 steps
    """

    method = "cce"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        rows: Mapping[str, int],
        known: Mapping[str, int],
        options: CCEOptions | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        order = [*self.univalent, *self.multivalent]
        self.rows = {f.name: int(rows[f.name]) for f in self.features}
        self.known = {f.name: int(known.get(f.name, 0)) for f in self.features}
        bad = {n: (r, self.known[n]) for n, r in self.rows.items() if not 1 <= r < 2**31 or self.known[n] < 0}
        if bad:
            raise ValueError(f"every feature needs 1 <= rows < 2^31 and known >= 0, got {bad}")
        self.options = options = options or CCEOptions()
        self.columns = options.columns
        sizes = [self.rows[f.name] for f in order]
        self.total_rows = sum(sizes)  # R, rows of one column over all features
        self.weight = nn.Parameter(torch.empty(self.columns * self.total_rows, embedding_dim, device=device))
        counts = [self.known[f.name] for f in order]
        key_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64).tolist()
        self._key_slices = [(s, s + n) for s, n in zip(key_starts, counts, strict=True)]
        num_known = sum(counts)
        self.register_buffer("keys", torch.zeros(num_known, dtype=torch.int64, device=device))
        self.register_buffer(
            "pointers", torch.zeros(num_known, self.columns, dtype=torch.int32, device=device)
        )
        salts = [[feature_salt(f.name, i) for i in range(self.columns)] for f in order]
        self.register_buffer("salts", torch.tensor(salts, dtype=torch.int64, device=device))  # [F, c]

        def index(name: str, values: list[int]) -> None:
            self.register_buffer(
                name, torch.tensor(values, dtype=torch.int64, device=device), persistent=False
            )

        index("sizes", sizes)
        index("starts", np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist())
        index("column_starts", [i * self.total_rows for i in range(self.columns)])
        self._sparse = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Rows N(0, 0.01^2 / c): a value's sum of c rows starts at about N(0, 0.01^2)."""
        if self.weight.device.type == "meta":
            return
        nn.init.normal_(self.weight, std=INIT_STD / self.columns**0.5)

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.weight]

    def set_sparse_gradients(self, enabled: bool) -> None:
        self._sparse = enabled

    def fill_vocabulary(self, vocabulary: Vocabulary, min_count: int = 1) -> None:
        """Keep each feature's H_f most frequent training values as known, pointing at their hashes.

        Args:
            vocabulary: the fitted value counts.
            min_count: values seen fewer times are never known.
        """
        names = [f.name for f in (*self.univalent, *self.multivalent)]
        with torch.no_grad():
            self.keys.copy_(hot_key_table(vocabulary, names, self.known, min_count))
            for j, (lo, hi) in enumerate(self._key_slices):
                self.pointers[lo:hi] = self._hashed(j, self.keys[lo:hi]).int()

    def _hashed(self, j: int, values: torch.Tensor) -> torch.Tensor:
        """Hash pointers of feature slot `j`: values [...] -> [..., c] local rows in [0, k_f)."""
        return salted_rows(splitmix64(values).unsqueeze(-1), self.salts[j], self.sizes[j])

    def _pointers(self, j: int, values: torch.Tensor) -> torch.Tensor:
        """Pointers of feature slot `j`: stored ones for known values, hashes otherwise; [...] -> [..., c]."""
        hashed = self._hashed(j, values)
        lo, hi = self._key_slices[j]
        if hi == lo:
            return hashed
        pos, found = find_keys(self.keys[lo:hi], values)
        return torch.where(found.unsqueeze(-1), self.pointers[lo:hi][pos].long(), hashed)

    def embed(self, values: torch.Tensor, index: slice | int) -> torch.Tensor:
        if isinstance(index, int):
            local, starts = self._pointers(index, values), self.starts[index]  # [L, c]
        else:
            # one binary search per feature: key sets differ in length, so a loop over F (not rows)
            slots = range(*index.indices(self.salts.shape[0]))
            local = torch.stack(
                [self._pointers(j, values[:, c].contiguous()) for c, j in enumerate(slots)], 1
            )  # [N, F', c]
            starts = self.starts[index].unsqueeze(-1)  # [F', 1]
        rows = local + starts + self.column_starts  # [..., c]
        return F.embedding(rows, self.weight, sparse=self._sparse).sum(-2)  # [..., D]

    @torch.no_grad()
    def recluster(self, round_: int) -> dict[str, list[float]]:
        """Re-cluster round `round_`: k-means of each feature's known embeddings into column round_ mod c.

        Column j = round_ mod c gets the k_f' = min(k_f, H_f) centroids and the known values'
        assignments; every other column restarts under fresh salts (of this round), at zero (then each
        known value's embedding becomes its centroid) or, with `fit_residual`, at the mean residual of
        the known values hashed to each row. Features without known values are left alone.

        Returns:
            The k-means losses (initial, then after each Lloyd iteration) per clustered feature.
        """
        c, j = self.columns, round_ % self.columns
        losses: dict[str, list[float]] = {}
        table = self.weight.view(c, self.total_rows, self.embedding_dim)  # [c, R, D]
        for slot, f in enumerate((*self.univalent, *self.multivalent)):
            lo, hi = self._key_slices[slot]
            if hi == lo:
                continue
            start, k = int(self.starts[slot]), self.rows[f.name]
            rows = self.pointers[lo:hi].long() + start + self.column_starts  # [H_f, c]
            current = self.weight[rows].sum(1)  # [H_f, D], the known values' embeddings now
            seed = stable_index(f"cce/{self.options.seed}/{round_}/{f.name}", 2**63)
            result = kmeans(
                current,
                min(k, hi - lo),
                LLOYD_ITERATIONS,
                torch.Generator().manual_seed(seed),
            )
            losses[f.name] = result.losses
            table[:, start : start + k] = 0
            table[j, start : start + result.centroids.shape[0]] = result.centroids
            self.pointers[lo:hi, j] = result.assignments.int()
            others = [i for i in range(c) if i != j]
            if others:
                fresh = [feature_salt(f.name, c * (round_ + 1) + i) for i in others]
                self.salts[slot, others] = torch.tensor(fresh, dtype=torch.int64, device=self.salts.device)
                hashed = self._hashed(slot, self.keys[lo:hi])  # [H_f, c], under the new salts
                self.pointers[lo:hi, others] = hashed[:, others].int()
                if self.options.fit_residual:
                    self._fit_residual(
                        table, start, k, current - result.centroids[result.assignments], hashed, others
                    )
        return losses

    @staticmethod
    def _fit_residual(
        table: torch.Tensor,
        start: int,
        k: int,
        residual: torch.Tensor,
        hashed: torch.Tensor,
        columns: list[int],
    ) -> None:
        """Set each re-hashed column's rows, in turn, to the mean residual [H_f, D] of the known values
        hashed to them (least squares given the pointers; rows no known value reads stay zero)."""
        for i in columns:
            rows = hashed[:, i]  # [H_f]
            sums = residual.new_zeros(k, residual.shape[1]).index_add_(0, rows, residual)
            counts = torch.bincount(rows, minlength=k).clamp_(min=1).unsqueeze(1)
            fit = sums / counts.to(residual.dtype)  # [k, D]
            table[i, start : start + k] = fit
            residual = residual - fit[rows]

    def on_train_step(self, step: int) -> list[nn.Parameter] | None:
        """Re-cluster after every `recluster_every`-th training step, `reclusters` times at most.

        Returns the table when it re-clustered: its optimizer moments belong to the rows it replaced.
        """
        every = self.options.recluster_every
        if every and step % every == 0 and step // every <= self.options.reclusters:
            self.recluster(step // every - 1)
            return [self.weight]
        return None

    def config(self) -> dict[str, Any]:
        o = self.options
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "rows": dict(self.rows),
            "known": dict(self.known),
            "columns": o.columns,
            "recluster_every": o.recluster_every,
            "reclusters": o.reclusters,
            "seed": o.seed,
            "fit_residual": o.fit_residual,
        }


class CCEMethod(EmbeddingMethod):
    """`cce`: known values' keys and pointers take up to `pointer_share` of the budget, rows the rest."""

    name = "cce"
    options = CCEOptions

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: CCEOptions,
    ) -> dict[str, Any]:
        per_value, key = self.counted_costs(stats, target, "cce keeps pointers per known training value")
        in_bytes = target.unit is BudgetUnit.BYTES
        c = options.columns
        entry = key + c * (POINTER_BYTES if in_bytes else 0)  # one known value: its key and c pointers
        fixed = len(features) * c * (SALT_BYTES if in_bytes else 0)
        counts = [stats.vocabulary[f.name].counts for f in features]
        counts = [n[n >= stats.min_count] for n in counts]
        allowance = int(max(0, target.amount - fixed) * options.pointer_share)
        known = hottest(counts, [entry] * len(features), allowance)
        row = c * embedding_dim * per_value  # one row in every column
        total = (target.amount - fixed - sum(known) * entry) // row
        if total < len(features):
            raise ValueError(
                f"a budget of {target} is too small for cce: {max(total, 0)} rows per column for "
                f"{len(features)} features"
            )
        caps = [stats.cardinalities[f.name] + 1 for f in features]
        # c columns of k rows give k^c sums: ~sqrt(n) rows tell n values apart, and small features keep
        # a row per value (a split by cardinality would leave them one row, all values collapsed)
        sizes = split_rows(int(total), caps, weights=[math.sqrt(n) for n in caps])
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "rows": {f.name: int(n) for f, n in zip(features, sizes, strict=True)},
            "known": {f.name: int(h) for f, h in zip(features, known, strict=True)},
            "columns": c,
            "recluster_every": options.recluster_every,
            "reclusters": options.reclusters,
            "seed": options.seed,
            "fit_residual": options.fit_residual,
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        options = CCEOptions(
            columns=int(config["columns"]),
            recluster_every=int(config["recluster_every"]),
            reclusters=int(config["reclusters"]),
            seed=int(config["seed"]),
            fit_residual=bool(config["fit_residual"]),
        )
        return ClusteredEmbedding(
            features, int(config["embedding_dim"]), config["rows"], config["known"], options, device
        )

    def fill(self, layer: FeatureEmbedding, vocabulary: Vocabulary, min_count: int) -> None:
        assert isinstance(layer, ClusteredEmbedding)
        layer.fill_vocabulary(vocabulary, min_count)


register(CCEMethod())
