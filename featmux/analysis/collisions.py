"""Collision statistics of a hashed embedding layer on a dataset's vocabulary.

Every value of the training vocabulary (sorted fingerprints with counts) is mapped through the layer's
own row mapping (`univalent_rows` / `bag_rows`), so the statistics describe exactly the layer that
trains. An *occupant* is a (feature, value) pair on a row, one per probe (chunk); a probe collides when
its row holds another occupant: a different value of the same feature (within-feature collision) or a
value of another feature (cross-feature collision; only Unified Embedding's shared table has those).
A value's own chunks meeting on one row are not a collision.

Per (feature, chunk) slot: the share of the feature's distinct values whose probe collides, and the
share of its traffic (value occurrences in the training split) that does, each split into within and
cross. Per feature: the mean over its chunks, and the share of values whose *every* probe collides
(multi-probe's protection). Next to them, the rate uniform hashing would give, 1 - (1 - 1/m)^(N - 1)
for a probe among N occupants of m rows (`featmux.analysis.planner`).

Everything is vectorized: one sort of all occupants' rows.

Example:
    >>> data = prepare("frappe", "../shared/data/frappe")
    >>> layer = build_embedding(data.schema.categorical, spec, data.vocabulary)
    >>> report = collision_stats(layer, data.vocabulary)
    >>> report.features[0].values_any, report.features[0].traffic_cross
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from featmux.analysis.planner import collision_probability
from featmux.embeddings.base import FeatureEmbedding, TableEmbedding
from featmux.embeddings.collisionless import CollisionlessEmbedding
from featmux.embeddings.hashing import HashingEmbedding
from featmux.embeddings.unified import UnifiedEmbedding, _SharedTable
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature

DEFAULT_BLOCK = 1 << 20  # vocabulary values mapped per call of the layer's row function
_SHARE_FIELDS = (
    "values_any", "values_within", "values_cross", "traffic_any", "traffic_within", "traffic_cross",
    "values_all_chunks", "traffic_all_chunks",
)  # fmt: skip


@dataclass(frozen=True)
class SlotCollisions:
    """Collision shares of one (feature, chunk) probe.

    Args:
        slot: `feature#chunk`.
        feature: the feature.
        values, traffic: distinct values and their total count.
        values_any, values_within, values_cross: shares of the values whose probe collides (any /
            with the same feature / with another feature).
        traffic_any, traffic_within, traffic_cross: the same shares weighted by value counts.
        expected_any: the uniform-hashing rate for this probe's rows (None where not a hashed table).
    """

    slot: str
    feature: str
    values: int
    traffic: int
    values_any: float
    values_within: float
    values_cross: float
    traffic_any: float
    traffic_within: float
    traffic_cross: float
    expected_any: float | None


@dataclass(frozen=True)
class FeatureCollisions:
    """Collision shares of one feature: means over its chunks, and all-chunk collisions.

    Args:
        feature: the name.
        table: "shared", "hashed", "private" or "collisionless".
        chunks: K_f.
        values, traffic: distinct values and their total count.
        values_any, values_within, values_cross, traffic_any, traffic_within, traffic_cross: means of
            the slot shares over the feature's chunks.
        values_all_chunks, traffic_all_chunks: shares of values (traffic) whose every probe collides.
        expected_any: mean over chunks of the uniform-hashing rate (None where not hashed).
    """

    feature: str
    table: str
    chunks: int
    values: int
    traffic: int
    values_any: float
    values_within: float
    values_cross: float
    traffic_any: float
    traffic_within: float
    traffic_cross: float
    values_all_chunks: float
    traffic_all_chunks: float
    expected_any: float | None


@dataclass(frozen=True)
class CollisionReport:
    """Collision statistics of a layer (see the module docstring).

    Args:
        method: the layer's method.
        rows: rows of the table(s) analysed.
        occupied_rows: rows holding at least one occupant.
        occupants: probes of vocabulary values, all features.
        features: per feature, in the layer's feature order.
        slots: per (feature, chunk).
    """

    method: str
    rows: int
    occupied_rows: int
    occupants: int
    features: tuple[FeatureCollisions, ...]
    slots: tuple[SlotCollisions, ...]

    def feature_rows(self) -> list[dict[str, Any]]:
        """Per-feature statistics as plain dicts (for tables, CSV, JSON)."""
        return [dict(f.__dict__) for f in self.features]


def _table_of(layer: FeatureEmbedding) -> tuple[TableEmbedding, tuple[CategoricalFeature, ...]]:
    """The hashed table to analyse and the features kept in private tables (no collisions)."""
    if isinstance(layer, UnifiedEmbedding):
        private = layer.private.features if layer.private is not None else ()
        return layer.shared, tuple(private)
    if isinstance(layer, TableEmbedding):
        return layer, ()
    raise TypeError(f"collision statistics need a table-based layer, got {type(layer).__name__}")


def _slot_rows(
    table: TableEmbedding, vocabulary: Vocabulary, min_count: int, block: int
) -> list[tuple[CategoricalFeature, np.ndarray, np.ndarray]]:
    """(feature, counts [n], rows [n, K]) for each feature of `table`, in slot order."""
    vocabs = [vocabulary[f.name] for f in (*table.univalent, *table.multivalent)]
    keys, counts = [], []
    for fv in vocabs:
        keep = fv.counts >= min_count
        keys.append(fv.keys[keep])
        counts.append(fv.counts[keep])
    out = []
    uni = table.univalent
    if uni:
        chunks = [table.chunks_of(f) for f in uni]
        starts = np.concatenate([[0], np.cumsum(chunks)])
        longest = max(k.size for k in keys[: len(uni)])
        parts: list[list[np.ndarray]] = [[] for _ in uni]
        for lo in range(0, longest, block):
            hi = min(lo + block, longest)
            ids = np.zeros((hi - lo, len(uni)), dtype=np.int64)  # padding past a short vocabulary: unused
            for i in range(len(uni)):
                part = keys[i][lo:hi]
                ids[: part.size, i] = part
            with torch.no_grad():
                rows = table.univalent_rows(torch.from_numpy(ids)).numpy()  # [block, S_u]
            for i in range(len(uni)):
                n = max(0, min(hi, keys[i].size) - lo)
                parts[i].append(rows[:n, starts[i] : starts[i + 1]])
        for i, f in enumerate(uni):
            empty = np.zeros((0, chunks[i]), dtype=np.int64)
            out.append((f, counts[i], np.concatenate(parts[i]) if parts[i] else empty))
    for j, f in enumerate(table.multivalent):
        i = len(uni) + j
        with torch.no_grad():
            rows = table.bag_rows(j, torch.from_numpy(keys[i])).numpy()  # [n, K]
        out.append((f, counts[i], rows))
    return out


def _run_counts(sorted_keys: np.ndarray) -> np.ndarray:
    """For a sorted array, the length of the run each element belongs to."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    lengths = np.diff(np.concatenate([starts, [sorted_keys.size]]))
    return np.repeat(lengths, lengths)


def _expected(table: TableEmbedding, slot_sizes: Sequence[int]) -> list[float | None]:
    """Uniform-hashing collision rate of each slot's probes, for the hashed tables featmux builds."""
    if isinstance(table, HashingEmbedding):
        sizes = table.sizes.tolist()
        return [float(collision_probability(n - 1, m)) for n, m in zip(slot_sizes, sizes, strict=True)]
    if isinstance(table, _SharedTable):
        tables = np.asarray(table.slot_tables)
        per_table = np.bincount(
            tables, weights=np.asarray(slot_sizes, dtype=np.float64), minlength=tables.max() + 1
        )
        sizes = table.slot_sizes.tolist()
        # a probe's own other chunks in the same sub-table are not collisions (see the planner)
        return [
            float(collision_probability(per_table[t] - 1 - _same_table_chunks(table, s), sizes[s]))
            for s, t in enumerate(tables)
        ]
    return [None] * len(slot_sizes)


def _same_table_chunks(table: _SharedTable, slot: int) -> int:
    """Other chunks of the slot's feature placed in the same sub-table."""
    names = [name.rsplit("#", 1)[0] for name in table.slot_names]
    t = table.slot_tables[slot]
    return sum(1 for s, n in enumerate(names) if n == names[slot] and s != slot and table.slot_tables[s] == t)


def collision_stats(
    layer: FeatureEmbedding, vocabulary: Vocabulary, min_count: int = 1, block: int = DEFAULT_BLOCK
) -> CollisionReport:
    """Collision statistics of `layer` on the values of `vocabulary`.

    Args:
        layer: a hashing, unified (its shared table; private tables have none) or collisionless layer.
        vocabulary: value counts of the training split (sorted fingerprints + counts per feature).
        min_count: only values seen at least this often.
        block: vocabulary values mapped per call (bounds memory).

    Returns:
        Per-feature and per-slot shares of values and traffic that collide, within and across features.
    """
    table, private = _table_of(layer)
    per_feature = _slot_rows(table, vocabulary, min_count, block)
    # one occupant per (feature, value, chunk); ids: f = feature index, v = value index in the feature
    rows_list, feat_list, value_list, slot_list, count_list = [], [], [], [], []
    slot = 0
    offset = 0
    for fi, (_, counts, rows) in enumerate(per_feature):
        n, k = rows.shape
        rows_list.append(rows.reshape(-1))  # value-major: [v0c0, v0c1, ..., v1c0, ...]
        feat_list.append(np.full(n * k, fi, dtype=np.int64))
        value_list.append(np.repeat(np.arange(offset, offset + n, dtype=np.int64), k))
        slot_list.append(np.tile(np.arange(slot, slot + k, dtype=np.int64), n))
        count_list.append(np.repeat(counts, k))
        slot += k
        offset += n
    rows = np.concatenate(rows_list) if rows_list else np.zeros(0, np.int64)
    feat = np.concatenate(feat_list) if feat_list else np.zeros(0, np.int64)
    value = np.concatenate(value_list) if value_list else np.zeros(0, np.int64)
    slots = np.concatenate(slot_list) if slot_list else np.zeros(0, np.int64)
    weight = np.concatenate(count_list).astype(np.float64) if count_list else np.zeros(0)

    # distinct (row, feature, value) occupants: a value's own chunks on one row count once
    order = np.lexsort((value, feat, rows))
    r_s, f_s, v_s = rows[order], feat[order], value[order]
    first = np.concatenate([[True], (r_s[1:] != r_s[:-1]) | (f_s[1:] != f_s[:-1]) | (v_s[1:] != v_s[:-1])])
    distinct_r, distinct_f = r_s[first], f_s[first]
    # occupants per row and per (row, feature), among distinct ones, mapped back to every occupant
    per_row = _run_counts(distinct_r)
    per_row_feature = _run_counts(distinct_r * (len(per_feature) + 1) + distinct_f)
    group = np.cumsum(first) - 1  # index of each sorted occupant's distinct occupant
    within_sorted = per_row_feature[group] > 1
    cross_sorted = per_row[group] > per_row_feature[group]
    within = np.empty_like(within_sorted)
    cross = np.empty_like(cross_sorted)
    within[order], cross[order] = within_sorted, cross_sorted
    hit = within | cross

    num_slots = slot
    slot_values = np.bincount(slots, minlength=num_slots).astype(np.float64)
    slot_traffic = np.bincount(slots, weights=weight, minlength=num_slots)

    def share(flags: np.ndarray, weights: np.ndarray | None, total: np.ndarray) -> np.ndarray:
        got = np.bincount(
            slots, weights=flags * (weights if weights is not None else 1.0), minlength=num_slots
        )
        return np.divide(got, total, out=np.zeros(num_slots), where=total > 0)

    v_any, v_within, v_cross = (share(x, None, slot_values) for x in (hit, within, cross))
    t_any, t_within, t_cross = (share(x, weight, slot_traffic) for x in (hit, within, cross))
    slot_sizes = [c.size for _, c, r in per_feature for _ in range(r.shape[1])]
    expected = _expected(table, slot_sizes)

    # per value: does every probe collide?
    all_hit = np.bincount(value, weights=hit, minlength=offset) == np.bincount(value, minlength=offset)
    value_feature = np.repeat(np.arange(len(per_feature)), [c.size for _, c, _ in per_feature])
    value_count = np.concatenate([np.zeros(0), *(c for _, c, _ in per_feature)]).astype(np.float64)
    nf = len(per_feature)
    f_values = np.bincount(value_feature, minlength=nf).astype(np.float64)
    f_traffic = np.bincount(value_feature, weights=value_count, minlength=nf)
    f_all_v = np.bincount(value_feature, weights=all_hit.astype(np.float64), minlength=nf)
    f_all_t = np.bincount(value_feature, weights=all_hit * value_count, minlength=nf)

    names = table.slot_names
    slot_stats = tuple(
        SlotCollisions(
            slot=names[s],
            feature=names[s].rsplit("#", 1)[0],
            values=int(slot_values[s]),
            traffic=int(slot_traffic[s]),
            values_any=float(v_any[s]),
            values_within=float(v_within[s]),
            values_cross=float(v_cross[s]),
            traffic_any=float(t_any[s]),
            traffic_within=float(t_within[s]),
            traffic_cross=float(t_cross[s]),
            expected_any=expected[s],
        )
        for s in range(num_slots)
    )
    kind = {HashingEmbedding: "hashed", _SharedTable: "shared", CollisionlessEmbedding: "collisionless"}
    table_kind = kind.get(type(table), type(table).__name__)
    features = []
    s = 0
    for fi, (f, _, r) in enumerate(per_feature):
        k = r.shape[1]
        chunk = slot_stats[s : s + k]
        exp = [c.expected_any for c in chunk]
        features.append(
            FeatureCollisions(
                feature=f.name,
                table=table_kind,
                chunks=k,
                values=int(f_values[fi]),
                traffic=int(f_traffic[fi]),
                values_any=float(np.mean([c.values_any for c in chunk])),
                values_within=float(np.mean([c.values_within for c in chunk])),
                values_cross=float(np.mean([c.values_cross for c in chunk])),
                traffic_any=float(np.mean([c.traffic_any for c in chunk])),
                traffic_within=float(np.mean([c.traffic_within for c in chunk])),
                traffic_cross=float(np.mean([c.traffic_cross for c in chunk])),
                values_all_chunks=float(f_all_v[fi] / f_values[fi]) if f_values[fi] else 0.0,
                traffic_all_chunks=float(f_all_t[fi] / f_traffic[fi]) if f_traffic[fi] else 0.0,
                expected_any=float(np.mean(exp)) if all(e is not None for e in exp) else None,
            )
        )
        s += k
    for f in private:
        fv = vocabulary[f.name]
        keep = fv.counts >= min_count
        values, traffic = int(keep.sum()), int(fv.counts[keep].sum())
        none = dict.fromkeys(_SHARE_FIELDS, 0.0)  # a private table has no collisions
        features.append(FeatureCollisions(f.name, "private", 1, values, traffic, **none, expected_any=0.0))
    order_names = {f.name: i for i, f in enumerate(layer.features)}
    features.sort(key=lambda x: order_names[x.feature])
    return CollisionReport(
        method=layer.method,
        rows=table.num_rows,
        occupied_rows=int(np.unique(rows).size),
        occupants=int(first.sum()),
        features=tuple(features),
        slots=slot_stats,
    )
