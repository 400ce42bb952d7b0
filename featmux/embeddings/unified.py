"""Unified Embedding (feature multiplexing), Coleman et al., NeurIPS 2023.

All features share one table of M rows, split into T sub-tables. Feature f looks up K_f rows, one per
chunk c, at `hash(v; salt(f, c)) mod M_t` inside the sub-table t that (f, c) is placed in, and its K_f
vectors become K_f consecutive output slots (concatenated, the output of f is K_f * D wide).
Multivalent features pool each chunk over their bag. Features with tiny vocabularies may instead keep
a private collisionless table. A feature with `share_with` hashes with its owner's salts into its
owner's sub-tables (and its hot rows, or its private table), so a value reads the same K rows in both.

Stability: salts and sub-table placement derive from each slot's own feature *name* and chunk index:
slot (f, c) goes to sub-table (h(f) + c) mod T, h a stable hash of the name. Listing the features in
another order, adding a feature, or changing another feature's chunks moves no slot and changes no
bucket id (sub-table sizes depend only on M and T). A feature's chunks land in distinct sub-tables (up to
T of them). The price of placement by name is balance: sub-tables hold unequal numbers of slots, and a
layer whose placement would leave a sub-table empty (always when T exceeds the slots) is refused.

Layout versions (`PLACEMENT_VERSION`, stored in `config()`): 2 is the placement above; 1, of
checkpoints written before it, placed round-robin over the (name, chunk) pairs sorted by name (so it
depended on the other features). Version 1 layers still load (`UnifiedEmbeddingConfig.with_placement`);
with T = 1 both are the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from featmux.embeddings.adaptive import hot_keys, hottest
from featmux.embeddings.base import FeatureEmbedding, TableEmbedding
from featmux.embeddings.collisionless import CollisionlessEmbedding
from featmux.embeddings.precision import Precision, levels, row_bytes, served_bytes
from featmux.embeddings.registry import (
    BudgetTarget,
    EmbeddingMethod,
    VocabularyStats,
    register,
)
from featmux.embeddings.split import full_table_bytes
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature, check_shares, row_owners
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64, stable_index
from featmux.sparse import SparseFeatures

PLACEMENT_VERSION = 2
"""The sub-table placement new layers use (see the module docstring); checkpoints record theirs."""


@dataclass(frozen=True)
class UnifiedEmbeddingConfig:
    """Shape of a Unified Embedding layer.

    Args:
        rows: M, rows of the shared table (all sub-tables together).
        embedding_dim: D, width of one chunk's row.
        num_tables: T, sub-tables the shared rows are split into (1 to rows).
        chunks: K_f per feature name; features not listed get `default_chunks`.
        default_chunks: K for unlisted features.
        private: vocabulary size of each feature that keeps a private collisionless table instead.

    The sub-table layout version, `placement`, is `PLACEMENT_VERSION`; `with_placement(1)` gives the
    old layout of checkpoints written before it (see the module docstring).

    Example:
        >>> UnifiedEmbeddingConfig(rows=100_000, embedding_dim=16, num_tables=2, chunks={"user": 2})
    """

    rows: int
    embedding_dim: int
    num_tables: int = 1
    chunks: Mapping[str, int] = field(default_factory=dict)
    default_chunks: int = 1
    private: Mapping[str, int] = field(default_factory=dict)
    placement: int = field(default=PLACEMENT_VERSION, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", dict(self.chunks))
        object.__setattr__(self, "private", dict(self.private))
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.num_tables < 1:
            raise ValueError(f"num_tables must be >= 1, got {self.num_tables}")
        if self.rows < self.num_tables:
            raise ValueError(f"rows ({self.rows}) must be at least num_tables ({self.num_tables})")
        bad = {n: k for n, k in {**self.chunks, "<default>": self.default_chunks}.items() if k < 1}
        if bad:
            raise ValueError(f"chunk counts must be >= 1, got {bad}")
        both = sorted(set(self.chunks) & set(self.private))
        if both:
            raise ValueError(f"feature(s) {both} cannot have chunks in the shared table and a private table")

    def chunks_of(self, name: str) -> int:
        return self.chunks.get(name, self.default_chunks)

    def with_placement(self, version: int) -> UnifiedEmbeddingConfig:
        """This config with sub-table layout `version` (1: checkpoints written before version 2).

        Raises:
            ValueError: a version this featmux does not know.
        """
        if version not in (1, PLACEMENT_VERSION):
            raise ValueError(
                f"unknown placement layout version {version}: this featmux reads 1 and "
                f"{PLACEMENT_VERSION} (a checkpoint from a newer featmux?)"
            )
        config = replace(self)
        object.__setattr__(config, "placement", version)
        return config


def placement(
    slots: Sequence[tuple[str, int]], num_tables: int, version: int = PLACEMENT_VERSION
) -> dict[tuple[str, int], int]:
    """Sub-table of each (feature, chunk) slot.

    Args:
        slots: the (feature name, chunk index) pairs.
        num_tables: T.
        version: 2 (default): (h(name) + chunk) mod T, from the slot alone; 1: round-robin over the
            pairs sorted by name, then chunk (old checkpoints).

    Example:
        >>> where = placement([("user", 0), ("user", 1), ("ad", 0)], 2)
        >>> where[("user", 0)] != where[("user", 1)]
        True
    """
    if version == 1:
        return {slot: i % num_tables for i, slot in enumerate(sorted(slots))}
    return {(n, c): (stable_index(f"featmux/table/{n}", num_tables) + c) % num_tables for n, c in slots}


def check_placement(where: Mapping[tuple[str, int], int], num_tables: int) -> None:
    """Every sub-table must hold at least one slot: an empty one would be paid for and never read.

    Args:
        where: `placement`'s result.
        num_tables: T.

    Raises:
        ValueError: naming the empty sub-tables and what to change.
    """
    empty = sorted(set(range(num_tables)) - set(where.values()))
    if not empty:
        return
    if num_tables > len(where):
        why = f"num_tables ({num_tables}) exceeds the {len(where)} (feature, chunk) slots of the shared table"
    else:
        why = (
            f"placing the {len(where)} (feature, chunk) slots by feature name leaves sub-table(s) {empty} "
            f"of {num_tables} empty"
        )
    raise ValueError(f"{why}: an empty sub-table is counted but never read; use fewer tables or more chunks")


def table_bounds(rows: int, num_tables: int) -> list[tuple[int, int]]:
    """(start, size) of each sub-table; the first `rows % T` tables get one extra row."""
    base, extra = divmod(rows, num_tables)
    bounds, start = [], 0
    for t in range(num_tables):
        size = base + (1 if t < extra else 0)
        bounds.append((start, size))
        start += size
    return bounds


class _SharedTable(TableEmbedding):
    """The multiplexed table: every (feature, chunk) slot hashes into its sub-table of shared rows.

    Hot values (h_f per feature, their keys from `fill_hot_keys` or the state_dict) come first: each
    owns K_f rows of its own (one per chunk); the shared sub-tables follow them.
    """

    method = "unified-shared"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        config: UnifiedEmbeddingConfig,
        hot: Mapping[str, int],
        device: torch.device | None,
    ) -> None:
        # a feature with share_with reads its owner's slots: the owner's chunks, salts, sub-tables, hot rows
        chunks = {f.name: config.chunks_of(f.row_owner) for f in features}
        self.hot = {f.name: int(hot.get(f.name, 0)) for f in features}
        if min(self.hot.values()) < 0:
            raise ValueError(f"hot value counts must be >= 0, got {self.hot}")
        hot_rows = sum(self.hot[n] * k for n, k in chunks.items())
        super().__init__(features, config.embedding_dim, hot_rows + config.rows, device)
        self._chunks = chunks
        order = [*self.univalent, *self.multivalent]
        # feature j's hot values: keys[key_lo:key_hi], rows from row_lo, K_f consecutive rows a value
        blocks: dict[str, tuple[int, int, int]] = {}
        key_lo = row_lo = 0
        for f in row_owners(order):
            blocks[f.name] = (key_lo, key_lo + self.hot[f.name], row_lo)
            key_lo += self.hot[f.name]
            row_lo += self.hot[f.name] * chunks[f.name]
        self._hot_blocks = [blocks[f.row_owner] for f in order]
        if key_lo:  # only then: state_dicts (checkpoints, TorchRec adapters) of other layers are unchanged
            self.register_buffer("hot_keys", torch.zeros(key_lo, dtype=torch.int64, device=device))
        slots = [(f.name, c) for f in order for c in range(self._chunks[f.name])]
        keys = [
            (f.row_owner, c) for f in order for c in range(self._chunks[f.name])
        ]  # what each slot hashes as
        where = placement(list(dict.fromkeys(keys)), config.num_tables, config.placement)
        check_placement(where, config.num_tables)
        bounds = [(start + hot_rows, size) for start, size in table_bounds(config.rows, config.num_tables)]
        self.slot_tables = tuple(where[k] for k in keys)

        def buffer(name: str, values: list[int]) -> None:
            self.register_buffer(
                name, torch.tensor(values, dtype=torch.int64, device=device), persistent=False
            )

        buffer("slot_salts", [feature_salt(n, c) for n, c in keys])
        buffer("slot_starts", [bounds[where[k]][0] for k in keys])
        buffer("slot_sizes", [bounds[where[k]][1] for k in keys])
        col = {f.name: i for i, f in enumerate(self.univalent)}
        buffer("slot_columns", [col[n] for n, _ in slots if n in col])
        self._num_univalent_slots = len(self.slot_columns)
        self._single_chunk = self._num_univalent_slots == len(self.univalent)
        first, self._bag_slots = self._num_univalent_slots, []
        for f in self.multivalent:
            self._bag_slots.append((first, first + self._chunks[f.name]))
            first += self._chunks[f.name]

    def chunks_of(self, feature: CategoricalFeature) -> int:
        return self._chunks[feature.name]

    def fill_hot_keys(self, vocabulary: Vocabulary, min_count: int = 1) -> None:
        """Copy each feature's h_f most frequent training values into `hot_keys`, once before training."""
        owned = row_owners(self._order)
        parts = [hot_keys(vocabulary, f.name, self.hot[f.name], min_count) for f in owned]
        got = {f.name: p.size for f, p in zip(owned, parts, strict=True)}
        if got != {f.name: self.hot[f.name] for f in owned}:
            raise ValueError(f"the vocabulary has {got} values for hot counts {self.hot}")
        if sum(got.values()):
            with torch.no_grad():
                self.hot_keys.copy_(torch.from_numpy(np.concatenate(parts)))

    @property
    def _order(self) -> tuple[CategoricalFeature, ...]:
        return (*self.univalent, *self.multivalent)

    def _hot(self, j: int, values: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """Rows [N, K] of feature j's values [N]: a hot value's own K rows, else `shared` [N, K]."""
        key_lo, key_hi, row_lo = self._hot_blocks[j]
        if key_hi == key_lo:
            return shared
        keys = self.hot_keys[key_lo:key_hi]
        pos = torch.searchsorted(keys, values).clamp_(max=key_hi - key_lo - 1)  # [N]
        k = shared.shape[1]
        own = row_lo + pos.unsqueeze(1) * k + torch.arange(k, device=values.device)  # [N, K]
        return torch.where((keys[pos] == values).unsqueeze(1), own, shared)

    def univalent_rows(self, ids: torch.Tensor) -> torch.Tensor:
        premixed = splitmix64(ids)  # [B, F_u], one mix per value whatever K
        if not self._single_chunk:
            premixed = premixed[:, self.slot_columns]  # [B, S_u]
        s = self._num_univalent_slots
        rows = salted_rows(premixed, self.slot_salts[:s], self.slot_sizes[:s]).add_(self.slot_starts[:s])
        lo = 0
        for j, f in enumerate(self.univalent):  # a loop over features with hot values, not over rows
            hi = lo + self._chunks[f.name]
            if self.hot[f.name]:
                rows[:, lo:hi] = self._hot(j, ids[:, j].contiguous(), rows[:, lo:hi])
            lo = hi
        return rows

    def bag_rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        lo, hi = self._bag_slots[index]
        premixed = splitmix64(values).unsqueeze(1)  # [L, 1]
        rows = salted_rows(premixed, self.slot_salts[lo:hi], self.slot_sizes[lo:hi]) + self.slot_starts[lo:hi]
        return self._hot(len(self.univalent) + index, values, rows)

    def config(self) -> dict[str, Any]:  # the parent layer carries the config
        raise NotImplementedError


class UnifiedEmbedding(FeatureEmbedding):
    """Unified Embedding: one shared hashed table for all features, K_f probes per feature.

    With `qat` int8 or int4 the layer trains float master rows but reads every row as it will be
    served (row-wise codes with a float16 scale and bias, `featmux.embeddings.precision`), gradients
    passing straight through; `serving_bytes()` counts the served tables, `memory_bytes()` the float
    ones, and `quantize_embedding(layer, qat)` gives the served layer, which computes the same outputs.

    With `hot`, the h_f most frequent training values of feature f own K_f rows each inside the
    shared table (before its sub-tables; keys filled by `fill_vocabulary`); the others are multiplexed.

    Args:
        features: the categorical features.
        config: table size (`rows`: the multiplexed rows), chunk counts, sub-tables, private features.
        hot: h_f, hot values per feature name that get rows of their own (none by default).
        qat: the precision the tables are served at and trained for (fp32: plain training).
        device: where to allocate.

    Example:
        >>> config = UnifiedEmbeddingConfig(rows=50_000, embedding_dim=10, num_tables=2)
        >>> layer = UnifiedEmbedding(schema.categorical, config)
        >>> layer(sparse).shape  # [B, F, 10] (with K_f = 1)
    """

    method = "unified"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        config: UnifiedEmbeddingConfig,
        hot: Mapping[str, int] | None = None,
        qat: Precision | str = Precision.FP32,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, config.embedding_dim)
        hot = {n: int(h) for n, h in (hot or {}).items() if int(h) != 0}
        unknown = sorted((set(config.chunks) | set(config.private) | set(hot)) - {f.name for f in features})
        if unknown:
            raise ValueError(f"UnifiedEmbeddingConfig names unknown feature(s) {unknown}")
        check_shares(self.features)
        followers = {f.name: f.share_with for f in self.features if f.share_with is not None}
        named = sorted(set(followers) & (set(config.chunks) | set(config.private) | set(hot)))
        if named:
            raise ValueError(
                f"feature(s) {named} read the rows of {sorted({followers[n] for n in named})} "
                "(share_with), and with them their chunks, private table and hot rows: set those there"
            )
        self.unified_config = config
        # a feature with share_with goes where its owner goes (the shared table or the private tables)
        shared = [f for f in self.features if f.row_owner not in config.private]
        private = [f for f in self.features if f.row_owner in config.private]
        if not shared:
            raise ValueError("every feature is private: nothing left for the shared table")
        if set(hot) & set(config.private):
            both = sorted(set(hot) & set(config.private))
            raise ValueError(f"private features {both} cannot have hot rows")
        self.shared = _SharedTable(shared, config, hot, device)
        self.private = (
            CollisionlessEmbedding(private, config.embedding_dim, config.private, device) if private else None
        )
        columns = {f.name: i for i, f in enumerate(self.univalent)}

        def index(names: Sequence[CategoricalFeature]) -> torch.Tensor:
            return torch.tensor(
                [columns[f.name] for f in names if not f.multivalent], dtype=torch.int64, device=device
            )

        self.register_buffer("shared_columns", index(shared), persistent=False)
        self.register_buffer("private_columns", index(private), persistent=False)
        bag_index = {f.name: j for j, f in enumerate(self.multivalent)}
        self._shared_bags = [bag_index[f.name] for f in self.shared.multivalent]
        self._private_bags = [bag_index[f.name] for f in private if f.multivalent]
        self.qat = Precision(qat)
        if self.qat is not Precision.FP32:
            self.set_quantization_aware(levels(self.qat))

    def serving_bytes(self) -> int:
        """Bytes of the served layer: its tables at the `qat` precision (`memory_bytes()` at fp32)."""
        return served_bytes(self, self.qat)

    def fill_private_vocabulary(self, vocabulary: Vocabulary, min_count: int = 1) -> None:
        """Copy the private features' vocabularies into their tables (needed once, before training)."""
        if self.private is not None:
            self.private.fill_vocabulary(vocabulary, min_count)

    def fill_vocabulary(self, vocabulary: Vocabulary, min_count: int = 1) -> None:
        """Copy what the layer keeps of the training vocabulary (private tables' keys, hot values).

        Args:
            vocabulary: the value counts of the training split.
            min_count: values seen fewer times are out of vocabulary (and never hot).
        """
        self.fill_private_vocabulary(vocabulary, min_count)
        self.shared.fill_hot_keys(vocabulary, min_count)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return self.shared.slot_names + (self.private.slot_names if self.private is not None else ())

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, S, D], shared slots first, private slots last."""
        if self.private is None:
            return self.shared(sparse)
        shared_ids = sparse.ids.index_select(1, self.shared_columns)  # [B, F_shared]
        private_ids = sparse.ids.index_select(1, self.private_columns)  # [B, F_private]
        out_shared = self.shared(SparseFeatures(shared_ids, tuple(sparse.bags[j] for j in self._shared_bags)))
        out_private = self.private(
            SparseFeatures(private_ids, tuple(sparse.bags[j] for j in self._private_bags))
        )
        return torch.cat([out_shared, out_private], dim=1)  # [B, S, D]

    def bag_vectors(self, name: str, values: torch.Tensor) -> torch.Tensor:
        part = self.shared if any(f.name == name for f in self.shared.features) else self.private
        if part is None:
            raise ValueError(f"{name!r} is not a feature of this layer")
        return part.bag_vectors(name, values)

    def table_parameters(self) -> list[torch.nn.Parameter]:
        return [self.shared.weight] + ([self.private.weight] if self.private is not None else [])

    def config(self) -> dict[str, Any]:
        return UnifiedMethod.layer_config(self.unified_config, self.shared.hot, self.qat)


QAT_BITS = {0: Precision.FP32, 8: Precision.INT8, 4: Precision.INT4}
AUTO = "auto"
MAX_AUTO_CHUNKS = 4
CHUNK_COLLISIONS = 0.1
"""`auto_chunks`: the expected share of a feature's (effective) values that may share all their rows."""


def effective_values(counts: np.ndarray) -> float:
    """exp(entropy) of the training value counts: how many equally frequent values they amount to.

    A uniform feature of n values gives n; a skewed one much less (its head carries the traffic).
    """
    c = counts[counts > 0].astype(np.float64)
    if c.size == 0:
        return 1.0
    p = c / c.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def auto_chunks(counts: Mapping[str, np.ndarray], rows_per_table: int) -> dict[str, int]:
    """K_f per feature from its training value counts and the rows one chunk probes (M / T).

    A value whose K chunks all land on rows that another value of the same feature also reads is
    indistinguishable from it. With n_f effective values (`effective_values`) hashed into m rows,
    a value expects (n_f - 1) / m^K such twins, so K_f is the smallest K with
    (n_f - 1) / m^K <= CHUNK_COLLISIONS, at most MAX_AUTO_CHUNKS. Small or skewed features get one
    chunk (each chunk adds a slot to the model and |V_f| lookups to the shared rows' load); features
    with more effective values than rows get two or more. The rule reads only the counts and the
    budget's rows, so the choice is deterministic.
    """
    m = max(2, rows_per_table)
    chosen = {}
    for name, c in counts.items():
        twins = effective_values(c) - 1
        k = 1
        while k < MAX_AUTO_CHUNKS and twins / m**k > CHUNK_COLLISIONS:
            k += 1
        chosen[name] = k
    return chosen


@dataclass(frozen=True)
class UnifiedOptions:
    """Options of the `unified` method (`embedding_options`; `--num-tables`, `--chunks` on the CLI).

    Args:
        num_tables: T sub-tables of the shared table.
        chunks: K_f per feature name; unlisted features get `default_chunks`.
        default_chunks: K for unlisted features, or "auto": K_f chosen per feature by `auto_chunks`.
        private_max_cardinality: features with at most this many values keep a private collisionless
            table, paid from the budget (0: none).
        qat_bits: 8 or 4: quantization-aware training for tables served as int8 / int4; the rows are
            solved from the budget in served bytes (0: fp32 tables).
        hot_share: the share of the budget given to hot values: the most frequent training values
            (over all shared features) own K_f rows each, plus an int64 key (0: none).

    Example:
        >>> UnifiedOptions(num_tables=2, chunks={"user": 2}, qat_bits=8, hot_share=0.25)
    """

    num_tables: int = 1
    chunks: Mapping[str, int] = field(default_factory=dict)
    default_chunks: int | str = 1
    private_max_cardinality: int = 0
    qat_bits: int = 0
    hot_share: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", {str(k): int(v) for k, v in dict(self.chunks).items()})
        if self.num_tables < 1:
            raise ValueError(f"num_tables must be >= 1, got {self.num_tables}")
        chunks = self.default_chunks
        if isinstance(chunks, str) and chunks.strip().isdigit():
            chunks = int(chunks)
        elif isinstance(chunks, str):
            chunks = chunks.strip().lower()
        object.__setattr__(self, "default_chunks", chunks)
        if chunks != AUTO and not (isinstance(chunks, int) and chunks >= 1):
            raise ValueError(f"default_chunks must be >= 1 or {AUTO!r}, got {self.default_chunks!r}")
        bad = {n: k for n, k in self.chunks.items() if k < 1}
        if bad:
            raise ValueError(f"chunks must be >= 1, got {bad}")
        if self.private_max_cardinality < 0:
            raise ValueError(f"private_max_cardinality must be >= 0, got {self.private_max_cardinality}")
        if self.qat_bits not in QAT_BITS:
            raise ValueError(f"qat_bits must be one of {sorted(QAT_BITS)}, got {self.qat_bits}")
        if not 0 <= self.hot_share < 1:
            raise ValueError(f"hot_share must be in [0, 1), got {self.hot_share}")

    @property
    def qat(self) -> Precision:
        """The precision the tables are trained for and served at."""
        return QAT_BITS[self.qat_bits]


class UnifiedMethod(EmbeddingMethod):
    """`unified`: Unified Embedding; the shared table gets what the private tables leave of the budget."""

    name = "unified"
    options = UnifiedOptions
    shares_rows = True
    shorthands = frozenset({"num_tables", "chunks", "default_chunks", "private_max_cardinality"})

    def check_features(self, options: UnifiedOptions, names: Sequence[str]) -> None:
        unknown = sorted(set(options.chunks) - set(names))
        if unknown:
            raise ValueError(f"chunks name unknown feature(s) {unknown}; the features are {list(names)}")

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: UnifiedOptions,
    ) -> dict[str, Any]:
        assert target is not None
        private: dict[str, int] = {}
        owners = row_owners(features)  # features with share_with follow their owner
        if options.private_max_cardinality > 0:
            if not stats.known:
                raise ValueError("private tables for small features need a vocabulary")
            for f in owners:
                n = stats.cardinalities[f.name]
                if n <= options.private_max_cardinality and f.name not in options.chunks:
                    private[f.name] = n

        # the private tables (rows, vocabulary keys, row starts) are paid first; the shared rows get the
        # rest (the shared table is all else the layer stores: its index buffers are not stored). Rows
        # cost what they take served: fp32, or int8 / int4 codes plus a scale and bias (qat_bits).
        per_value, key = target.costs
        per_row = row_bytes(options.qat, embedding_dim) if per_value > 1 else embedding_dim  # bytes | params
        paid = sum(full_table_bytes(n, 1, per_row, key) for n in private.values())
        rows = (target.amount - paid) // per_row
        if rows < options.num_tables:
            raise ValueError(
                f"a budget of {target} is too small: it leaves fewer than {options.num_tables} shared "
                f"rows of width {embedding_dim} after the private tables ({len(private)}): raise the "
                "budget or make fewer features private"
            )
        chunks = dict(options.chunks)
        shared = [f for f in owners if f.name not in private]
        if options.default_chunks == AUTO or options.hot_share > 0:
            if stats.vocabulary is None:
                raise ValueError(
                    "--chunks auto and hot_share read the training value counts: they need a vocabulary"
                )
            vocabulary = stats.vocabulary
            counts = {f.name: vocabulary[f.name].counts for f in shared}
            counts = {n: c[c >= stats.min_count] for n, c in counts.items()}
        if options.default_chunks == AUTO:
            # K_f from the rows of the budget without hot rows (the shared rows do not depend on K)
            chunks |= auto_chunks(
                {n: c for n, c in counts.items() if n not in chunks}, rows // options.num_tables
            )
        default_chunks = options.default_chunks if options.default_chunks != AUTO else 1
        config = UnifiedEmbeddingConfig(
            rows, embedding_dim, options.num_tables, chunks, default_chunks, private
        )
        hot: dict[str, int] = {}
        if options.hot_share > 0:
            # a hot value costs its K_f rows and its key; the multiplexed rows get what is left
            costs = [config.chunks_of(f.name) * per_row + key for f in shared]
            taken = hottest([counts[f.name] for f in shared], costs, int(target.amount * options.hot_share))
            hot = {f.name: h for f, h in zip(shared, taken, strict=True) if h}
            rows = (target.amount - paid - sum(h * c for h, c in zip(taken, costs, strict=True))) // per_row
            if rows < options.num_tables:
                raise ValueError(
                    f"a budget of {target} is too small: the hot values leave fewer than "
                    f"{options.num_tables} shared rows: lower hot_share"
                )
            config = replace(config, rows=rows)
        return self.layer_config(config, hot, options.qat)

    @staticmethod
    def layer_config(
        c: UnifiedEmbeddingConfig, hot: Mapping[str, int] | None = None, qat: Precision = Precision.FP32
    ) -> dict[str, Any]:
        """The plain config (checkpoint form) of a layer of shape `c` (with `hot` values, for `qat`)."""
        hot = {n: int(h) for n, h in (hot or {}).items() if h}
        extra: dict[str, Any] = {"hot": hot} if hot else {}
        if qat is not Precision.FP32:
            extra["qat"] = qat.value
        return extra | {
            "method": UnifiedMethod.name,
            "embedding_dim": c.embedding_dim,
            "rows": c.rows,
            "num_tables": c.num_tables,
            "chunks": dict(c.chunks),
            "default_chunks": c.default_chunks,
            "private": dict(c.private),
            "placement": c.placement,
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> UnifiedEmbedding:
        unified = UnifiedEmbeddingConfig(
            rows=int(config["rows"]),
            embedding_dim=int(config["embedding_dim"]),
            num_tables=int(config["num_tables"]),
            chunks=config.get("chunks", {}),
            default_chunks=int(config.get("default_chunks", 1)),
            private=config.get("private", {}),
        ).with_placement(int(config.get("placement", 1)))  # configs without it predate layout version 2
        return UnifiedEmbedding(features, unified, config.get("hot"), config.get("qat", "fp32"), device)

    def fill(self, layer: FeatureEmbedding, vocabulary: Vocabulary, min_count: int) -> None:
        assert isinstance(layer, UnifiedEmbedding)
        layer.fill_vocabulary(vocabulary, min_count)


register(UnifiedMethod())
