"""Quotient-remainder embeddings: the two lookups, the combiners, and how solve meets a budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, Vocabulary, build_embedding
from featmux.embeddings.qr import QRCombiner, QREmbedding, qr_costs
from featmux.embeddings.registry import BudgetUnit
from featmux.embeddings.split import FullTableSplit
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.hashing import feature_salt, salted_rows, splitmix64
from featmux.sparse import SparseFeatures

DIM = 8
FULL_BYTES = (1000 + 300 + 4 + 18 + 4) * DIM * 4


@pytest.mark.parametrize("combiner", list(QRCombiner))
def test_a_value_reads_its_quotient_and_remainder_rows(combiner):
    features = [CategoricalFeature("a", ValueEncoding.INT), CategoricalFeature("b", ValueEncoding.INT)]
    layer = QREmbedding(features, DIM, {"a": 7, "b": 3}, {"a": 5, "b": 2}, combiner)
    ids = torch.arange(-50, 50).reshape(-1, 2)
    out = layer(SparseFeatures(ids))
    index = salted_rows(splitmix64(ids[:, 1]), torch.tensor(feature_salt("b")), 3 * 2)  # virtual rows of b
    q = layer.quotient[7 + index // 2]  # b's quotient rows start after a's 7
    r = layer.remainder[5 + index % 2]
    expected = {QRCombiner.MULT: q * r, QRCombiner.ADD: q + r, QRCombiner.CONCAT: torch.cat([q, r], 1)}
    torch.testing.assert_close(out[:, 1], expected[combiner])
    widths = (DIM // 2, DIM // 2) if combiner is QRCombiner.CONCAT else (DIM, DIM)
    assert (layer.quotient.shape[1], layer.remainder.shape[1]) == widths
    assert layer.memory_bytes() == ((7 + 3) * widths[0] + (5 + 2) * widths[1]) * 4


def test_distinct_virtual_rows_get_distinct_vectors():
    """The virtual Q x c table is represented exactly: no two indices share both rows."""
    layer = QREmbedding([CategoricalFeature("a", ValueEncoding.INT)], DIM, {"a": 13}, {"a": 11})
    index = torch.arange(13 * 11)
    pairs = torch.stack([index // 11, index % 11], 1)
    assert torch.unique(pairs, dim=0).shape[0] == 13 * 11
    assert layer.num_parameters() == (13 + 11) * DIM


def test_solve_takes_the_smallest_collision_count_that_fits(features, vocabulary):
    for budget in ("1", "1/4", "1/8"):
        layer = build_embedding(features, EmbeddingSpec("qr", DIM, Budget.parse(budget)), vocabulary)
        config = layer.config()
        c = max(config["remainder_rows"].values())
        limit = round(Budget.parse(budget).fraction * FULL_BYTES)
        assert layer.memory_bytes() <= limit
        # a feature below c uses its own cheapest count (near sqrt(|V_f| + 1))
        cards = np.array([1000, 300, 4, 18])
        for name, n in zip(("user", "item", "device", "genres"), cards, strict=True):
            if name in config["remainder_rows"] and config["remainder_rows"][name] < c:
                own = config["remainder_rows"][name]
                costs, _ = qr_costs(np.array([n]), np.arange(1, 40), DIM, QRCombiner.MULT, BudgetUnit.BYTES)
                assert own == 1 + int(costs[:, 0].argmin())
        # granularity: one collision fewer (each feature at most its own cheapest) would not fit
        candidates = np.arange(1, 40)
        costs, _ = qr_costs(cards, candidates, DIM, QRCombiner.MULT, BudgetUnit.BYTES)
        cheapest = candidates[costs.argmin(axis=0)]
        qr, full = qr_costs(
            cards, np.minimum(c - 1, cheapest)[None, :], DIM, QRCombiner.MULT, BudgetUnit.BYTES
        )
        assert np.minimum(qr[0], full).sum() > limit


def test_small_features_keep_a_full_table_paid_from_the_budget():
    features = [CategoricalFeature("big", ValueEncoding.INT), CategoricalFeature("tiny", ValueEncoding.INT)]
    vocabulary = Vocabulary(["big", "tiny"])
    vocabulary.update("big", np.arange(1000))
    vocabulary.update("tiny", np.arange(2))
    layer = build_embedding(features, EmbeddingSpec("qr", DIM, Budget.parse("1/8")), vocabulary)
    assert isinstance(layer, FullTableSplit)
    # 3 rows and 2 keys (+ a row start): 120 bytes, below any QR pair of tables for 3 virtual rows (128)
    assert layer.config()["full"] == {"tiny": 2}
    full_bytes = 3 * DIM * 4 + (2 + 1) * 8
    assert layer.full.memory_bytes() == full_bytes
    assert layer.memory_bytes() == layer.compressed.memory_bytes() + full_bytes <= (1001 + 3) * DIM * 4 / 8
    ids = torch.tensor([[5, 0], [6, 1], [7, 9]])
    out = layer(SparseFeatures(ids))
    assert layer.slot_names == ("big#0", "tiny#0")
    torch.testing.assert_close(out[:, 1], layer.full.weight[torch.tensor([1, 2, 0])])  # exact rows, 9 is OOV
    no_full = EmbeddingSpec("qr", DIM, Budget.parse("1/8"), options={"full_tables": False})
    assert isinstance(build_embedding(features, no_full, vocabulary), QREmbedding)


def test_a_budget_below_the_smallest_qr_layer_is_refused(features, vocabulary):
    with pytest.raises(ValueError, match=r"too small for qr: its smallest layer costs"):
        build_embedding(features, EmbeddingSpec("qr", DIM, Budget.parse("1/64")), vocabulary)
    with pytest.raises(ValueError, match="combiner must be one of"):
        EmbeddingSpec("qr", DIM, Budget.parse("1/4"), options={"combiner": "max"})


def test_the_unified_layout_shares_one_quotient_and_one_remainder_table(features, vocabulary, sparse):
    spec = EmbeddingSpec("qr", DIM, Budget.parse("1/16"), options={"layout": "unified"})
    layer = build_embedding(features, spec, vocabulary)
    assert isinstance(layer, QREmbedding) and layer.shared
    virtual = 1001 + 301 + 5 + 19
    c = layer.config()["remainder_rows"]
    assert layer.config()["quotient_rows"] == -(-virtual // c)
    assert layer.memory_bytes() == (-(-virtual // c) + c) * DIM * 4 <= FULL_BYTES / 16
    assert (-(-virtual // (c - 1)) + c - 1) * DIM * 4 > FULL_BYTES / 16  # one collision fewer does not fit
    assert layer(sparse).shape == (6, 4, DIM)
