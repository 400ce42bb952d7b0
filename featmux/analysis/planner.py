"""Budget planner for Unified Embedding: memory budget + cardinalities -> rows, chunks, sub-tables.

Closed forms (uniform hashing). A value that shares a table of m rows with `others` other occupants
(values of any feature, one per probe) lands on a row nobody else uses with probability (1 - 1/m)^others,
so its expected collision rate is

    p(others, m) = 1 - (1 - 1/m)^others,     and for n values of one feature alone: p(n - 1, m).

In the shared table, a probe (f, c) placed in sub-table t of m_t rows holding N_t probes in all collides
with probability p(N_t - k, m_t), where k counts f's own probes in t (a value's own chunks are not
collisions); within-feature p((n_f - 1) k, m_t); cross-feature p(N_t - n_f k, m_t). A value of a
feature with K chunks has *every* probe shared with probability prod_c p_c (independent hashes): that
is what multi-probe buys, and what the planner minimises when it hands out chunks.

Traffic (if value counts are given): under uniform hashing the expected share of a feature's *traffic*
that collides equals the expected share of its values (each value collides with the same probability).
What traffic changes is how much of a row's training signal is foreign: a value v with count c_v
receives, in expectation, (C_t - k c_v) / m_t occurrences of other values in its row per probe, where
C_t is the traffic of all probes in its table. The planner reports the traffic-weighted mean of
E[foreign] / (c_v + E[foreign]) (a first-order estimate: expectation inside the ratio).

Steps of `plan_unified`:
1. Features with cardinality <= `private_max_cardinality` get private collisionless tables (|V_f| + 1
   rows and |V_f| int64 vocabulary keys), paid for first, as `build_embedding` does.
2. The shared table gets every remaining row the memory budget allows (parameters x bytes per parameter
   plus the layer's stored buffers, checked by building the layer on the meta device).
3. Sub-tables: `num_tables`, or the fewest that keep each under `max_table_rows` (fewer tables, more
   sharing), or 1. Placement is Unified Embedding's own (round-robin over (feature, chunk) sorted by
   name) and tables are equal in size, so their loads differ: the plan reports each table's load.
4. Chunks: greedily give one more chunk to the feature that most lowers the importance-weighted mean
   probability that all of a lookup's probes collide, while it lowers it, up to `max_chunks`
   (and `max_slots` slots in all).
5. For comparison, per-feature hashing at the same parameter count (rows split in proportion to
   cardinality, capped, as `build_embedding` does).

Example:
    >>> plan = plan_unified({"user": 1_000_000, "item": 50_000, "country": 200},
    ...                     PlannerConfig(budget_bytes=64 * 10**6, embedding_dim=16, max_chunks=2))
    >>> plan.experiment_options()
    {'embedding': 'unified', 'embedding_dim': 16, 'budget': 'params:...', 'num_tables': 1, ...}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from featmux.embeddings.budget import split_rows
from featmux.embeddings.unified import UnifiedEmbedding, UnifiedEmbeddingConfig, placement, table_bounds
from featmux.features import CategoricalFeature

KEY_BYTES = 8  # a private table's vocabulary key: one int64 fingerprint per value


def collision_probability(others: Any, rows: Any) -> Any:
    """P(a value's row is shared) = 1 - (1 - 1/rows)^others, with `others` other occupants (vectorized).

    Args:
        others: number of other occupants hashed uniformly into the same rows (>= 0).
        rows: number of rows m (>= 1).

    Example:
        >>> collision_probability(1, 2)   # one other value, two rows
        0.5
    """
    o = np.asarray(others, dtype=np.float64)
    m = np.asarray(rows, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = -np.expm1(o * np.log1p(-1.0 / m))  # accurate for large m and small rates
    p = np.where(o <= 0, 0.0, np.where(m <= 1, 1.0, p))
    return float(p) if p.ndim == 0 else p


def expected_collision_rate(n: Any, m: Any) -> Any:
    """Expected share of n values, hashed uniformly into m rows, that share their row: 1 - (1 - 1/m)^(n-1).

    Example:
        >>> expected_collision_rate(3, 4)   # 1 - (3/4)^2
        0.4375
    """
    return collision_probability(np.asarray(n, dtype=np.float64) - 1, m)


def foreign_share(counts: np.ndarray, table_traffic: float, rows: int, own_probes: int = 1) -> float:
    """Traffic-weighted mean of E[foreign] / (c_v + E[foreign]), E[foreign] = (C - k c_v) / m.

    Args:
        counts: the feature's value counts c_v.
        table_traffic: C, traffic of every probe hashed into the same rows (this feature's included).
        rows: m.
        own_probes: k, this value's probes into the same rows.
    """
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return 0.0
    foreign = np.maximum(table_traffic - own_probes * c, 0.0) / rows
    return float(np.sum(c * foreign / (c + foreign)) / total)


def parse_memory(text: str) -> int:
    """Bytes from `64MB`, `64 MiB`, `1.5GB`, `512kB`, `4096B`; a plain number is in MB (10^6 bytes).

    Example:
        >>> parse_memory("64MiB"), parse_memory("64")
        (67108864, 64000000)
    """
    units = {
        "": 10**6,
        "b": 1,
        "kb": 10**3,
        "mb": 10**6,
        "gb": 10**9,
        "kib": 2**10,
        "mib": 2**20,
        "gib": 2**30,
    }
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if not found or found.group(2) not in units:
        raise ValueError(f"cannot read memory size {text!r}: use e.g. 64MB, 64MiB, 1.5GB (plain number: MB)")
    value = int(float(found.group(1)) * units[found.group(2)])
    if value <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class PlannerConfig:
    """What the planner may spend and how.

    Args:
        budget_bytes: memory for the embedding layer: table parameters x `bytes_per_param`, plus the
            layer's buffers (private vocabularies, index buffers).
        embedding_dim: D, width of one chunk.
        bytes_per_param: bytes of one table parameter (4 for float32, 2 for 16-bit).
        max_chunks: the most chunks (probes) one feature may get (1: no multi-probe).
        max_slots: cap on the total slots S, i.e. on the model input width S x D (None: no cap).
        num_tables: T sub-tables (None: from `max_table_rows`, else 1).
        max_table_rows: the most rows one sub-table may have (e.g. one device's share).
        private_max_cardinality: features with at most this many values keep a private table (0: none).
    """

    budget_bytes: int
    embedding_dim: int
    bytes_per_param: int = 4
    max_chunks: int = 1
    max_slots: int | None = None
    num_tables: int | None = None
    max_table_rows: int | None = None
    private_max_cardinality: int = 0

    def __post_init__(self) -> None:
        for name in ("budget_bytes", "embedding_dim", "bytes_per_param", "max_chunks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_slots", "num_tables", "max_table_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.num_tables is not None and self.max_table_rows is not None:
            raise ValueError("give num_tables or max_table_rows, not both")
        if self.private_max_cardinality < 0:
            raise ValueError(f"private_max_cardinality must be >= 0, got {self.private_max_cardinality}")


@dataclass(frozen=True)
class FeaturePlan:
    """The plan for one feature and its expected collision rates (shares of its values).

    Args:
        name, cardinality: the feature.
        chunks: K_f (0 for a private table).
        private: keeps a private collisionless table.
        tables: sub-table of each chunk.
        collision: mean over chunks of P(probe shares its row with another value).
        within, cross: the same, counting only values of this / of other features.
        all_chunks: P(every probe of a value is shared) = product over chunks.
        indistinguishable: P(another value of the feature shares *all* its rows, so the two get the same
            embedding): 1 - (1 - prod_c 1/m_c)^(n - 1); equals `within` for one chunk.
        hashing_rows, hashing_collision: per-feature hashing at the same parameter count.
        foreign_share, hashing_foreign_share: traffic-weighted foreign share of a lookup's row
            (only with value counts).
    """

    name: str
    cardinality: int
    chunks: int
    private: bool
    tables: tuple[int, ...]
    collision: float
    within: float
    cross: float
    all_chunks: float
    indistinguishable: float
    hashing_rows: int
    hashing_collision: float
    foreign_share: float | None = None
    hashing_foreign_share: float | None = None


@dataclass(frozen=True)
class TablePlan:
    """One sub-table: its rows, the probes placed in it, and its load (probes per row)."""

    index: int
    rows: int
    slots: int
    occupants: int
    load: float


@dataclass(frozen=True)
class UnifiedPlan:
    """A proposed Unified Embedding layer (see `plan_unified`).

    Args:
        config: the planner's inputs.
        shared_rows: M, rows of the shared table (all sub-tables).
        num_tables: T.
        parameters: table parameters, private tables included (the `params:` budget that builds it).
        memory_bytes: parameters x bytes per parameter + the layer's buffers.
        chunks: K_f of the features with more than one chunk.
        private: cardinality of each feature with a private table.
        features: per-feature plan and expected collision rates.
        tables: per sub-table rows, probes and load.
        objective: importance-weighted mean over features of P(every probe of a value collides)
            (0 for private features).
        hashing_objective: the same for per-feature hashing at the same parameter count.
        weights: the importance weights used.
    """

    config: PlannerConfig
    shared_rows: int
    num_tables: int
    parameters: int
    memory_bytes: int
    chunks: dict[str, int]
    private: dict[str, int]
    features: tuple[FeaturePlan, ...]
    tables: tuple[TablePlan, ...]
    objective: float
    hashing_objective: float
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def num_slots(self) -> int:
        return sum(f.chunks if not f.private else 1 for f in self.features)

    @property
    def output_dim(self) -> int:
        """S x D: the width of the flattened embeddings the model sees."""
        return self.num_slots * self.config.embedding_dim

    def experiment_options(self) -> dict[str, Any]:
        """ExperimentConfig keys that build exactly this layer (with the same cardinalities)."""
        return {
            "embedding": "unified",
            "embedding_dim": self.config.embedding_dim,
            "budget": f"params:{self.parameters}",
            "num_tables": self.num_tables,
            "chunks": dict(self.chunks),
            "private_max_cardinality": self.config.private_max_cardinality,
        }


@dataclass
class _Geometry:
    """Probes per sub-table and the resulting per-feature rates, for one choice of chunks."""

    slot_table: dict[tuple[str, int], int]
    bounds: list[tuple[int, int]]
    occupants: np.ndarray  # [T] probes per table
    traffic: np.ndarray  # [T] traffic per table


def _geometry(
    chunks: Mapping[str, int], cards: Mapping[str, int], traffic: Mapping[str, float], rows: int, tables: int
) -> _Geometry:
    slots = [(name, c) for name, k in chunks.items() for c in range(k)]
    where = placement(slots, tables)
    occupants = np.zeros(tables)
    load = np.zeros(tables)
    for (name, _), t in where.items():
        occupants[t] += cards[name]
        load[t] += traffic.get(name, 0.0)
    return _Geometry(where, table_bounds(rows, tables), occupants, load)


def _feature_rates(
    name: str, k: int, n: int, g: _Geometry
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tables of the chunks, p_any, p_within, p_cross, own probes per chunk's table, rows per chunk)."""
    tables = [g.slot_table[(name, c)] for c in range(k)]
    own = np.array([tables.count(t) for t in tables], dtype=np.float64)
    m = np.array([g.bounds[t][1] for t in tables], dtype=np.float64)
    total = g.occupants[tables]
    p_any = collision_probability(total - own, m)
    p_within = collision_probability((n - 1) * own, m)
    p_cross = collision_probability(total - n * own, m)
    return tables, np.atleast_1d(p_any), np.atleast_1d(p_within), np.atleast_1d(p_cross), own, m


def _objective(
    chunks: Mapping[str, int], cards: Mapping[str, int], weights: Mapping[str, float], rows: int, tables: int
) -> float:
    g = _geometry(chunks, cards, {}, rows, tables)
    total = sum(weights[n] for n in chunks)
    value = 0.0
    for name, k in chunks.items():
        _, p_any, *_ = _feature_rates(name, k, cards[name], g)
        value += weights[name] * float(np.prod(p_any))
    return value / total if total > 0 else 0.0


def _buffer_bytes(chunks: Mapping[str, int], private: Mapping[str, int], dim: int, tables: int) -> int:
    """Bytes of the layer's stored buffers (private vocabularies), from a meta-device build.

    As `FeatureEmbedding.memory_bytes` counts them: index buffers rebuilt from the config are not stored.
    """
    features = [CategoricalFeature(name) for name in (*chunks, *private)]
    config = UnifiedEmbeddingConfig(
        rows=max(tables, 1),
        embedding_dim=dim,
        num_tables=tables,
        chunks={n: k for n, k in chunks.items() if k != 1},
        private=dict(private),
    )
    layer = UnifiedEmbedding(features, config, device=torch.device("meta"))
    return layer.memory_bytes() - sum(p.numel() * p.element_size() for p in layer.parameters())


def plan_unified(
    cardinalities: Mapping[str, int],
    config: PlannerConfig,
    importance: Mapping[str, float] | None = None,
    counts: Mapping[str, np.ndarray] | None = None,
) -> UnifiedPlan:
    """Propose a Unified Embedding layer for `cardinalities` within `config.budget_bytes`.

    Args:
        cardinalities: |V_f| per feature name.
        config: budget and limits.
        importance: weight of each feature in the objective (default: its cardinality, so the objective
            is the share of all values whose every probe is shared).
        counts: optional value counts per feature (e.g. `Vocabulary[name].counts`) for the
            traffic-weighted foreign share.

    Returns:
        The plan; `plan.experiment_options()` are the ExperimentConfig keys that build it.

    Raises:
        ValueError: a budget too small for the private tables and one row per sub-table.
    """
    if not cardinalities:
        raise ValueError("give at least one feature")
    cards = {name: int(n) for name, n in cardinalities.items()}
    if min(cards.values()) < 0:
        raise ValueError(f"cardinalities must be >= 0, got {cards}")
    unknown = sorted(set(importance or {}) - set(cards))
    if unknown:
        raise ValueError(f"importance names unknown feature(s) {unknown}")
    if importance is None:
        weights = {name: float(n) for name, n in cards.items()}
    else:
        missing = sorted(set(cards) - set(importance))
        if missing:
            raise ValueError(f"importance lacks feature(s) {missing}")
        weights = {name: float(importance[name]) for name in cards}
    dim, bpp = config.embedding_dim, config.bytes_per_param
    pmc = config.private_max_cardinality
    private = {n: c for n, c in cards.items() if pmc > 0 and c <= pmc}
    shared = sorted(n for n in cards if n not in private)
    if not shared:
        raise ValueError("every feature would be private: lower private_max_cardinality")
    private_rows = sum(c + 1 for c in private.values())
    private_key_bytes = KEY_BYTES * sum(private.values())

    def rows_for(buffer_bytes: int) -> int:
        return (config.budget_bytes - buffer_bytes) // (bpp * dim) - private_rows

    rough_rows = rows_for(private_key_bytes)
    chunks = dict.fromkeys(shared, 1)
    if rough_rows < (config.num_tables or 1):
        raise ValueError(
            f"{config.budget_bytes:,} bytes leave {rough_rows} shared rows after the private tables: "
            "raise the budget or lower private_max_cardinality"
        )
    # 3. sub-tables: as given; else the fewest that respect max_table_rows (the most sharing); else 1
    if config.num_tables is not None:
        tables = config.num_tables
    elif config.max_table_rows is not None:
        tables = max(1, math.ceil(rough_rows / config.max_table_rows))
    else:
        tables = 1
    if tables > len(shared) * config.max_chunks:
        raise ValueError(
            f"{tables} sub-tables but at most {len(shared) * config.max_chunks} (feature, chunk) slots: "
            "raise max_table_rows or max_chunks"
        )

    # 4. chunks, greedily, on the rough row count (buffers are a few bytes per slot)
    best = _objective(chunks, cards, weights, rough_rows, tables)
    while True:
        if config.max_slots is not None and sum(chunks.values()) + len(private) >= config.max_slots:
            break
        candidate, candidate_value = None, best
        for name in shared:
            if chunks[name] >= config.max_chunks:
                continue
            value = _objective({**chunks, name: chunks[name] + 1}, cards, weights, rough_rows, tables)
            if value < candidate_value * (1 - 1e-12):
                candidate, candidate_value = name, value
        if candidate is None:
            break
        chunks[candidate] += 1
        best = candidate_value
    if sum(chunks.values()) < tables:
        raise ValueError(f"{tables} sub-tables for {sum(chunks.values())} slots: some tables would be empty")

    # the exact row count, now that the slots (and so the index buffers) are known
    buffers = _buffer_bytes(chunks, private, dim, tables)
    rows = rows_for(buffers)
    if rows < tables:
        raise ValueError(f"{config.budget_bytes:,} bytes leave {rows} shared rows for {tables} sub-tables")
    parameters = (rows + private_rows) * dim
    traffic = {n: float(np.sum(counts[n])) for n in cards} if counts is not None else {}
    g = _geometry(chunks, cards, traffic, rows, tables)

    # 5. per-feature hashing at the same parameter count
    names = list(cards)
    hashing_rows = dict(
        zip(
            names,
            split_rows(max(len(names), parameters // dim), [max(1, cards[n]) for n in names]),
            strict=True,
        )
    )

    features = []
    for name in names:
        n = cards[name]
        m_h = hashing_rows[name]
        p_hash = float(expected_collision_rate(n, m_h))
        f_counts = counts.get(name) if counts is not None else None
        h_foreign = foreign_share(f_counts, traffic[name], m_h) if f_counts is not None else None
        if name in private:
            features.append(
                FeaturePlan(
                    name=name,
                    cardinality=n,
                    chunks=0,
                    private=True,
                    tables=(),
                    collision=0.0,
                    within=0.0,
                    cross=0.0,
                    all_chunks=0.0,
                    indistinguishable=0.0,
                    hashing_rows=m_h,
                    hashing_collision=p_hash,
                    foreign_share=0.0 if f_counts is not None else None,
                    hashing_foreign_share=h_foreign,
                )
            )
            continue
        k = chunks[name]
        tabs, p_any, p_within, p_cross, own, m = _feature_rates(name, k, n, g)
        u_foreign = None
        if f_counts is not None:
            u_foreign = float(
                np.mean(
                    [
                        foreign_share(f_counts, g.traffic[t], int(mm), int(o))
                        for t, mm, o in zip(tabs, m, own, strict=True)
                    ]
                )
            )
        features.append(
            FeaturePlan(
                name=name,
                cardinality=n,
                chunks=k,
                private=False,
                tables=tuple(tabs),
                collision=float(p_any.mean()),
                within=float(p_within.mean()),
                cross=float(p_cross.mean()),
                all_chunks=float(np.prod(p_any)),
                indistinguishable=float(collision_probability(n - 1, float(np.prod(m)))),
                hashing_rows=m_h,
                hashing_collision=p_hash,
                foreign_share=u_foreign,
                hashing_foreign_share=h_foreign,
            )
        )
    total_weight = sum(weights.values())
    objective = sum(weights[f.name] * f.all_chunks for f in features) / total_weight if total_weight else 0.0
    hashing_objective = (
        sum(weights[f.name] * f.hashing_collision for f in features) / total_weight if total_weight else 0.0
    )
    slots_per_table = np.zeros(tables, dtype=np.int64)
    for t in g.slot_table.values():
        slots_per_table[t] += 1
    table_plans = tuple(
        TablePlan(t, size, int(slots_per_table[t]), int(g.occupants[t]), float(g.occupants[t] / size))
        for t, (_, size) in enumerate(g.bounds)
    )
    return UnifiedPlan(
        config=config,
        shared_rows=rows,
        num_tables=tables,
        parameters=parameters,
        memory_bytes=parameters * bpp + buffers,
        chunks={n: k for n, k in sorted(chunks.items()) if k > 1},
        private=dict(private),
        features=tuple(features),
        tables=table_plans,
        objective=objective,
        hashing_objective=hashing_objective,
        weights=weights,
    )


def feature_rows(plan: UnifiedPlan) -> list[dict[str, Any]]:
    """The per-feature plan as plain rows (for tables, CSV or JSON)."""
    return [
        {
            "feature": f.name,
            "cardinality": f.cardinality,
            "chunks": f.chunks,
            "private": f.private,
            "tables": list(f.tables),
            "collision": f.collision,
            "within": f.within,
            "cross": f.cross,
            "all_chunks": f.all_chunks,
            "indistinguishable": f.indistinguishable,
            "hashing_rows": f.hashing_rows,
            "hashing_collision": f.hashing_collision,
            "foreign_share": f.foreign_share,
            "hashing_foreign_share": f.hashing_foreign_share,
        }
        for f in plan.features
    ]


def plan_summary(plan: UnifiedPlan) -> dict[str, Any]:
    """The plan as one JSON-able dict."""
    return {
        "budget_bytes": plan.config.budget_bytes,
        "memory_bytes": plan.memory_bytes,
        "parameters": plan.parameters,
        "shared_rows": plan.shared_rows,
        "num_tables": plan.num_tables,
        "slots": plan.num_slots,
        "output_dim": plan.output_dim,
        "objective_all_chunks_collide": plan.objective,
        "hashing_mean_collision": plan.hashing_objective,
        "experiment_options": plan.experiment_options(),
        "tables": [t.__dict__ for t in plan.tables],
        "features": feature_rows(plan),
    }
