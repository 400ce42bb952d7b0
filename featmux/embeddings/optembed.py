"""OptEmbed (Lyu et al., CIKM 2022), CLI name `optembed`: learned row pruning plus a searched width per field.

OptEmbed is trained in three stages (`featmux.training.optembed` runs them; `featmux train --embedding
optembed` and `run_experiment` call it):

1. Supernet. A collisionless table [R, D] (one row per training value, an OOV row per field) with one
   learnable threshold t_f per field: a row whose L2 norm is below its field's threshold reads as zero,
   m = step(||e||_2 - u t_f), u = 0.01 sqrt(D) the initial row norm (thresholds are learned in units of
   it, so that they move at a rate relative to the rows), trained with a straight-through estimator (the
   long-tailed derivative the authors' code uses: 2 - 4|x| within 0.4 of the threshold, 0.4 within 1,
   0 beyond) plus the penalty `threshold_penalty * sum_f exp(-t_f)`, which pushes the thresholds up.
   At the same time each sample's field f reads only its first d_f columns, d_f drawn uniformly from
   1..D per sample and field (uniform dimension sampling), so that every width is trained.
2. Search. An evolutionary search over (d_1 .. d_F) scores each candidate by the supernet's validation
   AUC with that shape: the fields read d_f columns and the rows the thresholds kept, cut to the budget
   where they do not fit by dropping the least frequent training values first (`fit_rows`).
   Population, parents, generations and mutation rate are options.
3. Retraining. The found shape, rows kept and widths, becomes an `OptEmbedEmbedding` and the whole
   model is retrained from the supernet's initial weights (the authors' `retrain.py` loads the supernet's
   `init.pth`: lottery-ticket rewinding).

The served layer (`OptEmbedEmbedding`) keeps, per field, the n_f values whose rows survived, each with a
row of width d_f zero-padded to D, plus the field's OOV row, which every other value reads (unseen
values, and values whose rows were pruned: the authors' `mode_oov=oov`; their default sets them to
zero). It stores (n_f + 1) d_f floats and n_f int64 keys per field; `fit_rows` never lets that exceed
the budget. `build_embedding` alone (no training) gives that layer at a prior shape: every field at
width D and the most frequent training values, which is also what a checkpoint rebuilds from its config.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featmux.embeddings.adaptive import hot_keys, hottest
from featmux.embeddings.base import INIT_STD, FeatureEmbedding, TableEmbedding, ValueEmbedding, embed_rows
from featmux.embeddings.collisionless import CollisionlessEmbedding
from featmux.embeddings.registry import BudgetTarget, EmbeddingMethod, VocabularyStats, register
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature
from featmux.sparse import SparseFeatures


class _Step(torch.autograd.Function):
    """step(x) = 1[x > 0] forward; backward the long-tailed estimator of the derivative."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        a = x.abs()
        slope = torch.where(
            a <= 0.4, 2 - 4 * a, torch.where(a <= 1, torch.full_like(a, 0.4), torch.zeros_like(a))
        )
        return grad * slope


class OptEmbedSupernet(FeatureEmbedding):
    """Stage 1's layer: a collisionless table with per-field row thresholds and sampled widths.

    In training mode each (sample, field) reads d ~ U{1..D} columns; `use_shape(dims, keep)` fixes the
    widths and the kept rows instead (the search's candidates); in eval mode without a shape every
    field reads all D columns and the rows the thresholds keep.

    Args:
        features: the categorical features.
        embedding_dim: D.
        vocab_sizes: |V_f| per feature name (the table's keys come from `fill_vocabulary`).
        threshold_penalty: alpha of the penalty alpha * sum_f exp(-t_f) (`auxiliary_loss`).
        device: where to allocate.

    Example:
        >>> net = OptEmbedSupernet(features, 10, {"user": 900, "item": 50}, threshold_penalty=3e-4)
        >>> net.fill_vocabulary(vocabulary)
        >>> net(sparse).shape  # [B, 2, 10]
    """

    method = "optembed"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        vocab_sizes: Mapping[str, int],
        threshold_penalty: float = 3e-4,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        self.table = CollisionlessEmbedding(features, embedding_dim, vocab_sizes, device)
        # slot order, init 0 as the authors'; in units of the initial row norm, so that an optimizer step
        # moves a threshold by a fixed share of the rows' scale (Adam's lr-sized steps in absolute units
        # overtook every row norm of a D = 10 table within some 40 steps)
        self.thresholds = nn.Parameter(torch.zeros(len(features), device=device))
        self.threshold_unit = INIT_STD * embedding_dim**0.5
        self.threshold_penalty = float(threshold_penalty)
        self._dims: torch.Tensor | None = None  # [F] fixed widths (a search candidate), or None
        self._keep: torch.Tensor | None = None  # [R] bool rows read, or None (the thresholds decide)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return self.table.slot_names

    def fill_vocabulary(self, vocabulary: Vocabulary, min_count: int = 1) -> None:
        """Copy the training values' fingerprints into the table (see `CollisionlessEmbedding`)."""
        self.table.fill_vocabulary(vocabulary, min_count)

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.table.weight]

    def table_modules(self) -> list[TableEmbedding]:
        # the table is read through the masks below, not by TableEmbedding.forward: it has no row-update
        # (row_adam), quantization-aware or serving form, and saying so makes those refuse it
        return []

    def field_of_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The slot (field) index of each table row."""
        return torch.bucketize(rows, self.table.row_starts, right=True) - 1

    def _read(self, rows: torch.Tensor) -> torch.Tensor:
        e = F.embedding(rows, self.table.weight, sparse=self.table._sparse)  # [..., D]
        if self._keep is not None:
            return e * self._keep[rows].unsqueeze(-1).to(e.dtype)
        threshold = self.threshold_unit * self.thresholds[self.field_of_rows(rows)]  # [...]
        margin = e.norm(dim=-1) - threshold
        return e * _Step.apply(margin).unsqueeze(-1)

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, F, D], pruned rows zero, unread columns zero."""
        out = embed_rows(self.table, sparse, self._read)  # [B, F, D]
        columns = torch.arange(self.embedding_dim, device=out.device)
        if self._dims is not None:
            return out * (columns < self._dims.unsqueeze(1)).to(out.dtype)  # [F, D] mask
        if self.training:  # uniform dimension sampling, per sample and field
            dims = torch.randint(1, self.embedding_dim + 1, out.shape[:2], device=out.device)  # [B, F]
            return out * (columns < dims.unsqueeze(-1)).to(out.dtype)
        return out

    def auxiliary_loss(self) -> torch.Tensor | None:
        return self.threshold_penalty * torch.exp(-self.thresholds).sum()

    def use_shape(self, dims: Sequence[int] | None, keep: torch.Tensor | None = None) -> None:
        """Read `dims` [F] columns per field (slot order) and only rows `keep` [R] (None: back to normal)."""
        self._dims = None if dims is None else torch.tensor(list(dims), device=self.thresholds.device)
        self._keep = keep

    @torch.no_grad()
    def row_margins(self) -> torch.Tensor:
        """||e_r||_2 - u t_f(r) for every row r [R] (u: `threshold_unit`): positive where it is kept."""
        rows = torch.arange(self.table.num_rows, device=self.thresholds.device)
        threshold = self.threshold_unit * self.thresholds[self.field_of_rows(rows)]
        return self.table.weight.norm(dim=1) - threshold

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "supernet": {
                "vocab_sizes": dict(self.table.vocab_sizes),
                "threshold_penalty": self.threshold_penalty,
            },
        }


class OptEmbedEmbedding(ValueEmbedding):
    """OptEmbed's served table: per field, its kept values' rows at width d_f (zero-padded to D) and an
    OOV row that every other value reads.

    Args:
        features: the categorical features.
        embedding_dim: D.
        rows: n_f, kept values per feature name (their keys come with `fill_keys` or the state_dict).
        dims: d_f per feature name, 1 to D.
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> layer = OptEmbedEmbedding(features, 10, {"user": 400, "item": 50}, {"user": 3, "item": 10})
        >>> layer.fill_keys({"user": user_keys, "item": item_keys})
        >>> layer(sparse).shape  # [B, 2, 10]
    """

    method = "optembed"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        rows: Mapping[str, int],
        dims: Mapping[str, int],
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        order = [*self.univalent, *self.multivalent]
        self.rows = {f.name: int(rows[f.name]) for f in order}
        self.dims = {f.name: int(dims[f.name]) for f in order}
        bad = {
            n: (self.rows[n], d)
            for n, d in self.dims.items()
            if self.rows[n] < 0 or not 1 <= d <= embedding_dim
        }
        if bad:
            raise ValueError(f"rows must be >= 0 and dims in [1, {embedding_dim}], got {bad}")
        self.tables = nn.ParameterList(
            [
                nn.Parameter(torch.empty(self.rows[f.name] + 1, self.dims[f.name], device=device))
                for f in order
            ]
        )
        sizes = [self.rows[f.name] for f in order]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
        self._key_slices = list(itertools.pairwise(starts))
        self.register_buffer("keys", torch.zeros(starts[-1], dtype=torch.int64, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.tables[0].device.type == "meta":
            return
        for table in self.tables:
            nn.init.normal_(table, std=INIT_STD)

    def table_parameters(self) -> list[nn.Parameter]:
        return list(self.tables)

    def fill_keys(self, keys: Mapping[str, np.ndarray]) -> None:
        """Set each field's kept values (fingerprints; sorted here); their counts must match `rows`."""
        order = [*self.univalent, *self.multivalent]
        parts = [np.sort(np.asarray(keys[f.name], dtype=np.int64)) for f in order]
        got = {f.name: p.size for f, p in zip(order, parts, strict=True)}
        if got != self.rows:
            raise ValueError(f"{got} keys for kept rows {self.rows}")
        with torch.no_grad():
            self.keys.copy_(torch.from_numpy(np.concatenate([np.zeros(0, np.int64), *parts])))

    def _one(self, i: int, values: torch.Tensor) -> torch.Tensor:
        lo, hi = self._key_slices[i]
        table = self.tables[i]
        if hi == lo:
            row = torch.zeros_like(values)
        else:
            keys = self.keys[lo:hi]
            pos = torch.searchsorted(keys, values).clamp_(max=hi - lo - 1)
            row = torch.where(keys[pos] == values, pos + 1, torch.zeros_like(pos))  # 0: the OOV row
        return F.pad(table[row], (0, self.embedding_dim - table.shape[1]))  # [..., D]

    def embed(self, values: torch.Tensor, index: slice | int) -> torch.Tensor:
        if isinstance(index, int):
            return self._one(index, values)
        # one lookup per feature: widths differ, so a loop over F (never over rows)
        return torch.stack(
            [
                self._one(i, values[:, c].contiguous())
                for c, i in enumerate(range(*index.indices(len(self.tables))))
            ],
            1,
        )

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "rows": dict(self.rows),
            "dims": dict(self.dims),
        }


def shape_cost(rows: np.ndarray, dims: np.ndarray, target: BudgetTarget) -> int:
    """What an `OptEmbedEmbedding` with n_f = `rows` and d_f = `dims` costs in `target`'s unit."""
    per_value, key = target.costs
    return int(((rows + 1) * dims).sum() * per_value + rows.sum() * key)


def fit_rows(priority: Sequence[np.ndarray], dims: Sequence[int], target: BudgetTarget) -> list[int] | None:
    """How many rows each field keeps at widths `dims` within `target` (None: not even the OOV rows fit).

    Every candidate row is kept while they all fit; beyond the budget the rows of lowest priority over
    all fields are dropped first, each saving d_f floats and its key.

    Args:
        priority: per field, one value per candidate row (the rows the thresholds kept; the OOV row is
            not a candidate: it is always kept); the driver gives their training counts.
        dims: d_f per field.
        target: the budget.
    """
    d = np.asarray(dims, dtype=np.int64)
    counts = np.array([p.size for p in priority], dtype=np.int64)
    over = shape_cost(counts, d, target) - target.amount
    if over <= 0:
        return counts.tolist()
    if shape_cost(np.zeros_like(counts), d, target) > target.amount:
        return None
    per_value, key = target.costs
    field = np.concatenate([np.full(p.size, f) for f, p in enumerate(priority)] + [np.zeros(0, np.int64)])
    order = np.argsort(np.concatenate([*priority, np.zeros(0)]), kind="stable")  # lowest priority first
    saved = np.cumsum(d[field[order]] * per_value + key)
    drops = int(np.searchsorted(saved, over, side="left")) + 1  # the fewest drops that save `over`
    dropped = np.bincount(field[order[:drops]], minlength=len(priority))
    return (counts - dropped).tolist()


@dataclass(frozen=True)
class SearchResult:
    """The outcome of `evolutionary_search`.

    Args:
        dims: the best candidate's d_f per field.
        score: its objective (validation AUC).
        evaluated: how many distinct candidates were scored.
        history: the best score after each generation.

    Example:
        >>> SearchResult((4, 10), 0.97, 40, (0.95, 0.97))
    """

    dims: tuple[int, ...]
    score: float
    evaluated: int
    history: tuple[float, ...]


def evolutionary_search(
    score: Callable[[tuple[int, ...]], float],
    feasible: Callable[[tuple[int, ...]], bool],
    num_fields: int,
    max_dim: int,
    options: OptEmbedOptions,
    seed: int,
) -> SearchResult:
    """Maximize `score` over widths (d_1 .. d_F) in 1..max_dim: random feasible population, then each
    generation keeps the best `parents` and refills with mutations (each width resampled with
    probability `mutation`) and uniform crossovers of them. Each candidate is scored once.

    Args:
        score: the objective of a candidate (higher is better).
        feasible: whether a candidate can meet the budget at all (others are never scored).
        num_fields: F.
        max_dim: D.
        options: population, parents, generations, mutation.
        seed: seeds the search.
    """
    rng = np.random.default_rng(seed)
    scores: dict[tuple[int, ...], float] = {}

    def value(c: tuple[int, ...]) -> float:
        if c not in scores:
            scores[c] = float(score(c))
        return scores[c]

    def accept(c: tuple[int, ...], into: list[tuple[int, ...]]) -> None:
        if c not in into and feasible(c):
            into.append(c)

    population: list[tuple[int, ...]] = []
    for _ in range(50 * options.population):
        if len(population) >= options.population:
            break
        accept(tuple(int(v) for v in rng.integers(1, max_dim + 1, num_fields)), population)
    accept((1,) * num_fields, population)  # the narrowest shape fits whenever anything does
    if not population:
        raise ValueError("no field widths fit the budget")
    history = []
    for generation in range(options.generations):
        ranked = sorted(population, key=lambda c: (-value(c), c))
        parents = ranked[: options.parents]
        history.append(value(parents[0]))
        if generation == options.generations - 1:
            break
        population = list(parents)
        for _ in range(50 * options.population):
            if len(population) >= options.population:
                break
            if rng.random() < 0.5:  # mutation
                child = np.array(parents[rng.integers(len(parents))])
                flip = rng.random(num_fields) < options.mutation
                child[flip] = rng.integers(1, max_dim + 1, int(flip.sum()))
            else:  # uniform crossover
                a, b = (np.array(parents[i]) for i in rng.integers(len(parents), size=2))
                child = np.where(rng.random(num_fields) < 0.5, a, b)
            accept(tuple(int(v) for v in child), population)
    best = max(scores, key=lambda c: (scores[c], tuple(-v for v in c)))
    return SearchResult(best, scores[best], len(scores), tuple(history))


@dataclass(frozen=True)
class OptEmbedOptions:
    """Options of the `optembed` method (`embedding_options`).

    Args:
        threshold_penalty: alpha of alpha * sum_f exp(-t_f), which raises the row thresholds (the
            authors' default 3e-4).
        population: candidates per generation of the search.
        parents: the best candidates kept each generation.
        generations: search generations (each scores up to population - parents new candidates).
        mutation: the probability that a mutation resamples a field's width.

    Example:
        >>> OptEmbedOptions(population=12, generations=4)
    """

    threshold_penalty: float = 3e-4
    population: int = 16
    parents: int = 4
    generations: int = 5
    mutation: float = 0.1

    def __post_init__(self) -> None:
        if self.threshold_penalty < 0:
            raise ValueError(f"threshold_penalty must be >= 0, got {self.threshold_penalty}")
        if not 1 <= self.parents <= self.population:
            raise ValueError(f"need 1 <= parents <= population, got {self.parents} and {self.population}")
        if self.generations < 1:
            raise ValueError(f"generations must be >= 1, got {self.generations}")
        if not 0 <= self.mutation <= 1:
            raise ValueError(f"mutation must be in [0, 1], got {self.mutation}")


class OptEmbedMethod(EmbeddingMethod):
    """`optembed`: a thresholded, width-sampled supernet, an evolutionary width search, a retrained shape."""

    name = "optembed"
    options = OptEmbedOptions
    staged = True

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: OptEmbedOptions,
    ) -> dict[str, Any]:
        """The prior shape (before any training): width D everywhere, the most frequent values kept."""
        per_value, key = self.counted_costs(stats, target, "optembed prunes the collisionless table")
        oov = len(features) * embedding_dim * per_value
        if oov > target.amount:
            raise ValueError(
                f"a budget of {target} is too small for optembed: one OOV row per field costs {oov:,}"
            )
        counts = [stats.vocabulary[f.name].counts for f in features]
        counts = [c[c >= stats.min_count] for c in counts]
        rows = hottest(counts, [embedding_dim * per_value + key] * len(counts), target.amount - oov)
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "rows": {f.name: int(n) for f, n in zip(features, rows, strict=True)},
            "dims": {f.name: embedding_dim for f in features},
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        dim = int(config["embedding_dim"])
        if "supernet" in config:
            net = config["supernet"]
            return OptEmbedSupernet(
                features, dim, net["vocab_sizes"], float(net["threshold_penalty"]), device
            )
        return OptEmbedEmbedding(features, dim, config["rows"], config["dims"], device)

    def fill(self, layer: FeatureEmbedding, vocabulary: Vocabulary, min_count: int) -> None:
        if isinstance(layer, OptEmbedSupernet):
            layer.fill_vocabulary(vocabulary, min_count)
            return
        assert isinstance(layer, OptEmbedEmbedding)
        layer.fill_keys({n: hot_keys(vocabulary, n, k, min_count) for n, k in layer.rows.items()})


register(OptEmbedMethod())
