from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from featmux.analysis.collisions import collision_stats
from featmux.analysis.planner import collision_probability
from featmux.embeddings import (
    CollisionlessEmbedding,
    HashingEmbedding,
    UnifiedEmbedding,
    UnifiedEmbeddingConfig,
    Vocabulary,
)
from featmux.embeddings.base import TableEmbedding
from featmux.features import CategoricalFeature, ValueEncoding

A, B = CategoricalFeature("a", ValueEncoding.INT), CategoricalFeature("b", ValueEncoding.INT)


class HandTable(TableEmbedding):
    """A table whose rows are chosen by hand: chunk c of every feature reads row (id + shift_c) % 6."""

    def __init__(self, features, shifts: dict[str, tuple[int, ...]]) -> None:
        self.shifts = shifts
        super().__init__(features, 2, 6)

    def chunks_of(self, feature: CategoricalFeature) -> int:
        return len(self.shifts[feature.name])

    def univalent_rows(self, ids: torch.Tensor) -> torch.Tensor:
        cols = [(ids[:, i] + s) % 6 for i, f in enumerate(self.univalent) for s in self.shifts[f.name]]
        return torch.stack(cols, dim=1)

    def bag_rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {}


def vocabulary(values: dict[str, tuple[list[int], list[int]]]) -> Vocabulary:
    vocab = Vocabulary(list(values))
    for name, (keys, counts) in values.items():
        vocab.update(name, np.repeat(np.asarray(keys, dtype=np.int64), counts))
    return vocab


VOCAB = {"a": ([0, 1, 6], [5, 1, 2]), "b": ([1, 2], [3, 4])}


def test_one_chunk_by_hand():
    # rows: a0 -> 0, a1 -> 1, a6 -> 0; b1 -> 1, b2 -> 2.
    # row 0 holds a0 and a6 (within), row 1 holds a1 and b1 (cross), row 2 holds b2 alone.
    report = collision_stats(HandTable((A, B), {"a": (0,), "b": (0,)}), vocabulary(VOCAB))
    a, b = report.features
    assert (a.values, a.traffic, b.values, b.traffic) == (3, 8, 2, 7)
    assert (a.values_any, a.values_within, a.values_cross) == pytest.approx((1, 2 / 3, 1 / 3))
    assert (a.traffic_any, a.traffic_within, a.traffic_cross) == pytest.approx((1, 7 / 8, 1 / 8))
    assert (b.values_any, b.values_within, b.values_cross) == pytest.approx((1 / 2, 0, 1 / 2))
    assert (b.traffic_any, b.traffic_within, b.traffic_cross) == pytest.approx((3 / 7, 0, 3 / 7))
    assert (a.values_all_chunks, b.values_all_chunks, b.traffic_all_chunks) == pytest.approx(
        (1, 1 / 2, 3 / 7)
    )
    assert (report.rows, report.occupied_rows, report.occupants) == (6, 3, 5)
    assert a.expected_any is None  # not a hashed table featmux knows the geometry of


def test_two_chunks_by_hand():
    # a#0 reads (id) % 6: a0 -> 0, a1 -> 1, a6 -> 0;  a#1 reads (id + 1) % 6: a0 -> 1, a1 -> 2, a6 -> 1;
    # b reads id % 6: b1 -> 1, b2 -> 2.  row 0: a0, a6 | row 1: a1, a0, a6, b1 | row 2: a1, b2.
    report = collision_stats(HandTable((A, B), {"a": (0, 1), "b": (0,)}), vocabulary(VOCAB))
    a0, a1, b0 = report.slots
    assert (a0.slot, a1.slot, b0.slot) == ("a#0", "a#1", "b#0")
    assert (a0.values_within, a0.values_cross, a0.values_any) == pytest.approx((1, 1 / 3, 1))
    assert (a1.values_within, a1.values_cross, a1.values_any) == pytest.approx((2 / 3, 1, 1))
    assert (a0.traffic_cross, a1.traffic_within) == pytest.approx((1 / 8, 7 / 8))
    assert (b0.values_within, b0.values_cross) == pytest.approx((0, 1))
    a, b = report.features
    assert a.chunks == 2 and a.values_within == pytest.approx((1 + 2 / 3) / 2)
    assert a.values_all_chunks == 1 and b.values_all_chunks == 1


def test_a_values_own_chunks_on_one_row_are_no_collision():
    # both chunks of every value read the same row; values 0 and 1 are alone on rows 0 and 1
    report = collision_stats(HandTable((A,), {"a": (0, 6)}), vocabulary({"a": ([0, 1], [1, 1])}))
    assert report.features[0].values_any == 0.0 and report.occupants == 2


def test_min_count_drops_rare_values():
    report = collision_stats(HandTable((A, B), {"a": (0,), "b": (0,)}), vocabulary(VOCAB), min_count=2)
    a, b = report.features  # a1 (count 1) is gone, so b1 is alone on row 1
    assert (a.values, a.values_within, a.values_cross) == (2, 1.0, 0.0)
    assert b.values_any == 0.0


def _brute_force(table: TableEmbedding, vocab: Vocabulary) -> dict[str, tuple[float, float, float]]:
    """(values_within, values_cross, traffic_any) per slot, by looping over every value."""
    occupants = []  # (row, feature, value, slot, count)
    slot = 0
    uni = list(table.univalent)
    for f in (*table.univalent, *table.multivalent):
        fv, k = vocab[f.name], table.chunks_of(f)
        for v, count in zip(fv.keys.tolist(), fv.counts.tolist(), strict=True):
            if f.multivalent:
                rows = table.bag_rows(table.multivalent.index(f), torch.tensor([v]))[0].tolist()
            else:
                ids = torch.zeros(1, len(uni), dtype=torch.int64)
                ids[0, uni.index(f)] = v
                start = sum(table.chunks_of(g) for g in uni[: uni.index(f)])
                rows = table.univalent_rows(ids)[0, start : start + k].tolist()
            occupants += [(rows[c], f.name, v, slot + c, count) for c in range(k)]
        slot += k
    out = {}
    for s, name in enumerate(table.slot_names):
        mine = [o for o in occupants if o[3] == s]
        within = cross = traffic = 0
        for row, f, v, _, count in mine:
            others = {(o[1], o[2]) for o in occupants if o[0] == row} - {(f, v)}
            w, c = any(g == f for g, _ in others), any(g != f for g, _ in others)
            within, cross, traffic = within + w, cross + c, traffic + count * (w or c)
        out[name] = (within / len(mine), cross / len(mine), traffic / sum(o[4] for o in mine))
    return out


@pytest.fixture
def mixed():
    features = (
        A,
        B,
        CategoricalFeature("c", ValueEncoding.INT),
        CategoricalFeature("tags", ValueEncoding.INT, multivalent=True),
    )
    rng = np.random.default_rng(0)
    vocab = Vocabulary([f.name for f in features])
    for name, high in {"a": 120, "b": 75, "c": 9, "tags": 90}.items():
        vocab.update(name, rng.integers(0, high, 300))
    return features, vocab


def test_unified_layer_matches_brute_force(mixed):
    features, vocab = mixed
    config = UnifiedEmbeddingConfig(
        rows=400, embedding_dim=2, num_tables=2, chunks={"a": 2, "tags": 3}, private={"c": 9}
    )
    layer = UnifiedEmbedding(features, config)
    report = collision_stats(layer, vocab, block=16)  # several blocks of vocabulary values
    truth = _brute_force(layer.shared, vocab)
    for s in report.slots:
        assert (s.values_within, s.values_cross, s.traffic_any) == pytest.approx(truth[s.slot]), s.slot
    assert [f.feature for f in report.features] == ["a", "b", "c", "tags"]
    assert report.features[2].table == "private" and report.features[2].values_any == 0.0
    # the uniform-hashing rate uses the sub-table's occupants (a value's own chunks excluded)
    layout = layer.shared
    occupants = np.zeros(2)
    for name, t in zip(layout.slot_names, layout.slot_tables, strict=True):
        occupants[t] += vocab[name.rsplit("#", 1)[0]].keys.size
    first = report.slots[0]
    t0 = layout.slot_tables[0]
    own = sum(
        1
        for n, t in zip(layout.slot_names, layout.slot_tables, strict=True)
        if n.startswith("a#") and t == t0
    )
    assert first.expected_any == pytest.approx(
        collision_probability(occupants[t0] - own, layout.slot_sizes[0].item())
    )


def test_hashing_layer_has_only_within_collisions(mixed):
    features, vocab = mixed
    layer = HashingEmbedding(features, 2, {"a": 60, "b": 40, "c": 5, "tags": 30})
    report = collision_stats(layer, vocab)
    truth = _brute_force(layer, vocab)
    for s in report.slots:
        assert (s.values_within, s.values_cross, s.traffic_any) == pytest.approx(truth[s.slot])
        assert s.values_cross == 0.0
        n = vocab[s.feature].keys.size
        assert s.expected_any == pytest.approx(collision_probability(n - 1, layer.rows[s.feature]))


def test_collisionless_layer_has_none(mixed):
    features, vocab = mixed
    layer = CollisionlessEmbedding.from_vocabulary(features, vocab, 2)
    report = collision_stats(layer, vocab)
    assert all(f.values_any == 0.0 and f.table == "collisionless" for f in report.features)
