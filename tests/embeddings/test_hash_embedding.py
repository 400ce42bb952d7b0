"""Hash embeddings: k weighted pool rows per value, both layouts, and the budget split."""

from __future__ import annotations

import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
from featmux.embeddings.hash_embedding import HashEmbedding
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.hashing import feature_salt, salted_rows, splitmix64
from featmux.sparse import SparseFeatures

DIM = 8
FULL_BYTES = (1000 + 300 + 4 + 18 + 4) * DIM * 4


def test_a_value_is_the_weighted_sum_of_its_k_pool_rows():
    features = [CategoricalFeature("a", ValueEncoding.INT), CategoricalFeature("b", ValueEncoding.INT)]
    layer = HashEmbedding(features, DIM, {"a": (0, 40), "b": (40, 10)}, {"a": (0, 9), "b": (9, 3)}, hashes=3)
    ids = torch.arange(0, 60).reshape(-1, 2)
    out = layer(SparseFeatures(ids))
    mixed = splitmix64(ids[:, 1])
    rows = [40 + salted_rows(mixed, torch.tensor(feature_salt("b", i)), 10) for i in range(3)]
    weights = layer.importance[9 + salted_rows(mixed, torch.tensor(feature_salt("b", 3)), 3)]  # [N, 3]
    expected = sum(weights[:, i : i + 1] * layer.pool[rows[i]] for i in range(3))
    torch.testing.assert_close(out[:, 1], expected)
    assert layer.memory_bytes() == (50 * DIM + 12 * 3) * 4


@pytest.mark.parametrize("layout", ["per_feature", "unified"])
def test_solve_splits_the_budget_and_stays_within_a_row_of_it(features, vocabulary, layout):
    for budget in ("1/4", "1/8", "bytes:5000"):
        options = {"layout": layout, "hashes": 2, "importance_share": 0.25}
        spec = EmbeddingSpec("hash_embedding", DIM, Budget.parse(budget), options=options)
        layer = build_embedding(features, spec, vocabulary)
        limit = Budget.parse(budget).target((1000 + 300 + 4 + 18 + 4) * DIM, DIM).amount
        assert layer.memory_bytes() <= limit
        blocks = set(layer.pool_blocks.values())
        if layout == "unified":
            assert len(blocks) == 1  # every feature reads the whole pool
            # granularity: what is left is less than one pool row plus one importance row
            assert limit - layer.memory_bytes() < (DIM + 2) * 4
        else:
            assert len(blocks) == 4 and layer.pool_blocks["user"][1] > layer.pool_blocks["item"][1]
        share = layer.importance.numel() / (layer.importance.numel() + layer.pool.numel())
        assert share == pytest.approx(0.25, abs=0.05)


def test_hash_embedding_options_are_checked():
    with pytest.raises(ValueError, match="importance_share must be in"):
        EmbeddingSpec("hash_embedding", DIM, Budget.parse("1/4"), options={"importance_share": 1.5})
    with pytest.raises(ValueError, match="layout must be one of"):
        EmbeddingSpec("hash_embedding", DIM, Budget.parse("1/4"), options={"layout": "shared"})
